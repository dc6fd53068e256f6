"""The documented 502 answers, against real servers: "the orchestrator worked, a MySQL server
behind it did not".

- A command on a tablet whose mysqld is dead: 502 TABLET_UNAVAILABLE, with its address.
- A PlannedReparentShard whose new primary is in place but one replica cannot follow it (its
  SQL thread stops on a duplicate key): 502 PARTIAL_FAILURE, with the workflow's result (the
  new primary) in the details; the move itself is done.
"""

from __future__ import annotations

import aiohttp
import pytest

from tests.fixtures_cluster import Shard, ShardFactory, Writer
from tests.fixtures_service import ServiceFactory
from tests.service import command, error_code

pytestmark = pytest.mark.slow


async def test_commands_on_a_dead_tablet_are_502_tablet_unavailable(
    shard_factory: ShardFactory, service_factory: ServiceFactory, http: aiohttp.ClientSession
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await service_factory(shard, recoveries_enabled=False)
    s3 = shard.server("zone1-103")
    s3.kill()
    for name in ("StartReplication", "StopReplication"):
        status, body = await command(http, rs.url, name, {"alias": "zone1-103"})
        assert (status, error_code(body)) == (502, "TABLET_UNAVAILABLE"), (name, body)
        assert body["error"]["details"]["address"] == f"{s3.host}:{s3.port}", body


async def _duplicate_key_ahead(shard: Shard, alias: str, row_id: int) -> None:
    """A row only `alias` has (not binlogged); the same row then written on the primary stops
    `alias`'s SQL thread, now and after any repointing."""
    replica = shard.admin(alias)
    await replica.execute("SET SESSION sql_log_bin = 0")
    try:
        await replica.execute("INSERT INTO test.acked (id, t) VALUES (%s, 0)", (row_id,))
    finally:
        await replica.execute("SET SESSION sql_log_bin = 1")
    await shard.admin("zone1-101").execute(
        "INSERT INTO test.acked (id, t) VALUES (%s, 1)", (row_id,)
    )


async def test_prs_with_a_replica_that_cannot_follow_is_502_partial_failure(
    shard_factory: ShardFactory, service_factory: ServiceFactory, http: aiohttp.ClientSession
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(1)
    for alias in ("zone1-102", "zone1-103"):
        await writer.wait_all_on(alias)
    rs = await service_factory(shard, recoveries_enabled=False)
    await _duplicate_key_ahead(shard, "zone1-103", 777)

    status, body = await command(
        http, rs.url, "PlannedReparentShard",
        {"keyspace_shard": "commerce/0", "new_primary": "zone1-102",
         "wait_replicas_timeout": 2},
    )  # fmt: skip
    assert (status, error_code(body)) == (502, "PARTIAL_FAILURE"), body
    details = body["error"]["details"]
    assert "zone1-103" in body["error"]["message"], body
    assert details["result"]["new_primary"] == "zone1-102", details
    assert details["workflow_id"], details
    # The move is done: the new primary is the only writable server and named everywhere.
    assert await shard.primary_alias() == "zone1-102"
    assert await shard.writable() == ["zone1-102"]
    assert await shard.serving() == ("zone1-102", True)
    r = (await shard.admin("zone1-103").status()).replication
    assert r is not None and "1062" in r.last_sql_error, r
