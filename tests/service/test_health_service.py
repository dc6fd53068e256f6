"""Health checks of a running service against real servers, read through `GET /api/v1/health`
as an operator would: what it repairs (a read-only primary), what it only reports (replication
errors, errant transactions) and what it leaves alone on purpose (replication an operator
stopped with StopReplication).

The "nothing is done for N s" windows are each several health intervals long (0.3 s here)
plus the time a recovery takes, so that a recovery that would run has run by then.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from orchestrator.health.analysis import ProblemKind
from tests.fixtures_cluster import Shard, ShardFactory, Writer
from tests.fixtures_service import RunningService, ServiceFactory
from tests.helpers.health import recoveries, start_service, wait_for
from tests.service import command, get

pytestmark = pytest.mark.slow

# About ten health cycles (0.3 s each): a recovery the analysis asks for runs within one.
QUIET_WINDOW_S = 3.0


async def health(http: aiohttp.ClientSession, rs: RunningService) -> dict[str, Any]:
    status, doc = await get(http, rs.url, "/api/v1/health")
    assert status == 200, doc
    assert isinstance(doc, dict)
    return doc


def problems_of(doc: dict[str, Any], kind: ProblemKind) -> list[dict[str, Any]]:
    return [p for p in doc["problems"].get("commerce/0", []) if p["kind"] == kind.value]


async def test_read_only_primary_is_made_writable_again_by_the_service(
    shard_factory: ShardFactory, service_factory: ServiceFactory, http: aiohttp.ClientSession
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    rs = await start_service(shard, service_factory)
    writer = Writer(shard)
    writer.start()
    try:
        await writer.wait_acked(20)
        fenced_at = time.monotonic()
        await shard.admin("zone1-101").set_read_only(True)  # by hand, by mistake
        await wait_for(lambda: recoveries(rs, ProblemKind.PRIMARY_READ_ONLY, "succeeded"), 10,
                       "SetReadWrite on the read-only primary")  # fmt: skip
        repaired_s = time.monotonic() - fenced_at
        assert await shard.check_invariants() == "zone1-101"
        await writer.wait_acked(20)  # the application writes again, on the same primary
    finally:
        await writer.stop()
    writer.check_errors("read_only")  # refused while the primary was read-only
    doc = await health(http, rs)
    done = [e for e in doc["recoveries"] if e["problem"] == ProblemKind.PRIMARY_READ_ONLY.value]
    assert done and done[0]["tablet"] == "zone1-101" and done[0]["result"] == "succeeded", done
    assert recoveries(rs, ProblemKind.DEAD_PRIMARY) == []
    assert await writer.missing_on("zone1-101") == []
    print(f"read-only primary writable again after {repaired_s * 1000:.0f} ms; "
          f"{writer.error_kinds['read_only']} writes refused meanwhile")  # fmt: skip


async def _replication_error_on(shard: Shard, alias: str, row_id: int) -> None:
    """A row only `alias` has (not binlogged), then the same row on the primary: the replica's
    SQL thread stops on a duplicate key."""
    replica = shard.admin(alias)
    await replica.execute("SET SESSION sql_log_bin = 0")
    try:
        await replica.execute("INSERT INTO test.acked (id, t) VALUES (%s, 0)", (row_id,))
    finally:
        await replica.execute("SET SESSION sql_log_bin = 1")
    primary = await shard.primary_alias()
    assert primary is not None
    await shard.admin(primary).execute("INSERT INTO test.acked (id, t) VALUES (%s, 1)", (row_id,))


async def test_replication_errors_and_errant_transactions_are_reported_and_left_alone(
    shard_factory: ShardFactory, service_factory: ServiceFactory, http: aiohttp.ClientSession
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(1)
    for alias in ("zone1-102", "zone1-103"):
        await writer.wait_all_on(alias)  # the table and a first row replicated
    rs = await start_service(shard, service_factory)

    await _replication_error_on(shard, "zone1-103", 4242)
    # zone1-102 first applies the primary's write: an errant write made before that would
    # take the same sequence number, and gtid_strict_mode would then stop its replication
    # too (a second ReplicationError, which this test is not about).
    await shard.wait_rows("zone1-102", [4242])
    # A write on a replica by an account that read_only does not stop: an errant transaction.
    await shard.admin("zone1-102").execute("INSERT INTO test.acked (id, t) VALUES (4343, 2)")

    async def both_reported() -> bool:
        doc = await health(http, rs)
        return bool(problems_of(doc, ProblemKind.REPLICATION_ERROR)) and bool(
            problems_of(doc, ProblemKind.ERRANT_TRANSACTIONS)
        )

    await wait_for(both_reported, 10, "ReplicationError and ErrantTransactions in /api/v1/health")
    doc = await health(http, rs)
    (err,) = problems_of(doc, ProblemKind.REPLICATION_ERROR)
    assert err["tablet"] == "zone1-103" and "1062" in err["detail"], err
    (errant,) = problems_of(doc, ProblemKind.ERRANT_TRANSACTIONS)
    gtid_102 = f"-{shard.server('zone1-102').server_id}-"
    assert errant["tablet"] == "zone1-102" and gtid_102 in errant["detail"], errant

    # Reported, never "repaired": restarting a failing SQL thread or repointing a replica with
    # errant transactions would hide the problem or spread it.
    deadline = time.monotonic() + QUIET_WINDOW_S
    while time.monotonic() < deadline:
        kinds = {p["kind"] for p in (await health(http, rs))["problems"].get("commerce/0", [])}
        assert {ProblemKind.REPLICATION_ERROR.value, ProblemKind.ERRANT_TRANSACTIONS.value} <= kinds
        await asyncio.sleep(0.3)
    touched = [
        e for e in rs.service.health.recoveries() if e["tablet"] in ("zone1-102", "zone1-103")
    ]
    assert touched == [], touched
    r = (await shard.admin("zone1-103").status()).replication
    assert r is not None and not r.sql_running and "1062" in r.last_sql_error, r
    assert await shard.primary_alias() == "zone1-101"


async def test_stop_replication_is_left_stopped_by_a_running_service(
    shard_factory: ShardFactory, service_factory: ServiceFactory, http: aiohttp.ClientSession
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    status, body = await command(http, rs.url, "StopReplication", {"alias": "zone1-103"})
    assert status == 200, body

    deadline = time.monotonic() + QUIET_WINDOW_S
    while time.monotonic() < deadline:
        r = (await shard.admin("zone1-103").status()).replication
        assert r is not None and not r.io_running and not r.sql_running, (
            f"the service restarted replication an operator stopped: {r}"
        )
        await asyncio.sleep(0.2)
    # A cycle whose topology read came just before the command wrote its tag can see the
    # threads stopped and untagged; the recovery's fresh check then finds the tag and skips
    # (recorded as such). Nothing may run.
    acted = [e for e in recoveries(rs, ProblemKind.REPLICATION_STOPPED) if e["result"] != "skipped"]
    assert acted == [], acted
    doc = await health(http, rs)
    kinds = [p["kind"] for p in doc["problems"].get("commerce/0", []) if p["tablet"] == "zone1-103"]
    assert ProblemKind.REPLICATION_STOPPED.value not in kinds, kinds
    assert doc["tablets"]["zone1-103"]["healthy"], doc["tablets"]["zone1-103"]

    status, body = await command(http, rs.url, "StartReplication", {"alias": "zone1-103"})
    assert status == 200, body
    await shard.wait_replicating("zone1-103")
    # Stopped by hand this time (not by the command): the service starts it again.
    await shard.admin("zone1-103").stop_replication()
    await wait_for(lambda: recoveries(rs, ProblemKind.REPLICATION_STOPPED, "succeeded"), 10,
                   "StartReplication of a replica stopped by hand")  # fmt: skip
    assert await shard.check_invariants() == "zone1-101"
