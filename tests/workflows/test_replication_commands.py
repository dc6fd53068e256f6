"""ReparentTablet, StartReplication, StopReplication and ShardReplicationPositions against real
etcd and MariaDB servers."""

from __future__ import annotations

import time

import pytest

from tests.fixtures_cluster import ShardFactory, Writer
from workflows.errors import PartialFailureError, PreconditionError
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard
from workflows.replication import (
    reparent_tablet,
    shard_replication_positions,
    start_replication,
    stop_replication,
)


async def test_reparent_tablet_repoints_a_replica_that_was_down_during_prs(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(3)
    await writer.wait_all_on("zone1-103")
    down = shard.server("zone1-103")
    old_primary = shard.server("zone1-101")

    async def replica_goes_down() -> None:
        # PRS refuses to start with a tablet down, so it goes down once PRS has begun.
        await down.stop()

    env = shard.with_faults(prs_before_demote=replica_goes_down)
    with pytest.raises(PartialFailureError, match="zone1-103") as e:
        await planned_reparent_shard(
            env,
            PlannedReparentOptions(
                shard.keyspace, shard.shard, new_primary="zone1-102", wait_replicas_timeout=3
            ),
        )
    assert "zone1-102 is the new primary" in str(e.value)
    assert await shard.primary_alias() == "zone1-102"
    await writer.write(3)  # on the new primary, while 103 is down

    # 103 comes back still configured for the old primary and replicates from it again.
    await down.start_again()
    c = shard.admin("zone1-103")
    await c.start_replication()  # (the test's connection from before the restart reconnects)
    await shard.wait_replicating("zone1-103")
    status = await c.replication_status()
    assert status is not None and status.source_port == old_primary.port

    result = await reparent_tablet(shard.env, "zone1-103")
    assert result["primary"] == "zone1-102"
    status = await c.replication_status()
    assert status is not None and status.source_port == shard.server("zone1-102").port
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    assert await shard.check_invariants() == "zone1-102"


async def test_reparent_tablet_refuses_the_primary(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=2)
    with pytest.raises(PreconditionError, match="primary"):
        await reparent_tablet(shard.env, "zone1-101")
    assert await shard.check_invariants() == "zone1-101"


async def test_stop_and_start_replication(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)

    assert await stop_replication(shard.env, "zone1-102") == {
        "tablet": "zone1-102",
        "replication": "stopped",
    }
    status = await shard.admin("zone1-102").replication_status()
    assert status is not None and not status.io_running and not status.sql_running
    await writer.write(3)
    await writer.wait_all_on("zone1-103")
    assert await writer.missing_on("zone1-102") == writer.ids

    await start_replication(shard.env, "zone1-102")
    await writer.wait_all_on("zone1-102")
    with pytest.raises(PreconditionError, match="primary"):
        await start_replication(shard.env, "zone1-101")
    assert await shard.check_invariants() == "zone1-101"


async def test_shard_replication_positions_reports_every_tablet(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(3)
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    primary = shard.server("zone1-101")

    states = {s.alias: s for s in await shard_replication_positions(shard.env, "commerce", "0")}
    assert sorted(states) == shard.aliases
    p = states["zone1-101"]
    assert (p.type, p.replicating_from, p.read_only, p.error) == ("primary", None, False, None)
    assert p.position is not None and p.position.startswith("MariaDB/0-101-")
    for alias in ("zone1-102", "zone1-103"):
        r = states[alias]
        assert r.type == "replica" and r.read_only and r.error is None
        assert r.replicating_from == primary.address
        assert r.io_running and r.sql_running and r.lag_seconds == 0
        assert r.position == p.position and r.errant is None

    # A stopped replica shows it; a dead one says why instead of failing the whole call.
    await stop_replication(shard.env, "zone1-102")
    shard.server("zone1-103").kill()
    states = {s.alias: s for s in await shard_replication_positions(shard.env, "commerce", "0")}
    assert states["zone1-102"].io_running is False and states["zone1-102"].lag_seconds is None
    dead = states["zone1-103"]
    assert dead.type == "replica" and dead.position is None and dead.error
    assert states["zone1-101"].to_dict()["type"] == "primary"


async def test_stop_replication_is_remembered_until_start(shard_factory) -> None:  # type: ignore[no-untyped-def]
    """StopReplication marks the tablet so the health checks leave it stopped; StartReplication
    clears the mark."""
    from workflows.replication import STOPPED_BY_OPERATOR_TAG, start_replication, stop_replication

    shard = await shard_factory(tablets=2)
    await stop_replication(shard.env, "zone1-102")
    assert (await shard.store.get_tablet("zone1-102")).tags[STOPPED_BY_OPERATOR_TAG]
    assert (await shard.admin("zone1-102").status()).replication.io_running is False  # type: ignore[union-attr]
    await start_replication(shard.env, "zone1-102")
    assert STOPPED_BY_OPERATOR_TAG not in (await shard.store.get_tablet("zone1-102")).tags
    await shard.check_invariants()


async def test_reparent_tablet_of_a_diverged_tablet_fails_at_once(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    await writer.write(2)
    await writer.wait_all_on("zone1-103")
    # 103 holds a GTID the primary never had (as a diverged former primary does) and its
    # position does not show it: the primary refuses it with error 1236 once it connects.
    await shard.diverge("zone1-103")
    await writer.write(2)  # the primary moves past the diverged sequence number
    started = time.monotonic()
    with pytest.raises(
        PreconditionError, match="cannot replicate: IO thread stopped with error 1236"
    ):
        await reparent_tablet(shard.env, "zone1-103", wait_s=20)
    assert time.monotonic() - started < 5, "waited out wait_s for a tablet that cannot replicate"
