"""A tablet that comes back rejoins by itself, unless it holds what the shard never had.

Real MariaDB servers, a real etcd, the service in-process; the primary is SIGKILLed and later
started again on its datadir, as after a crash and a reboot.
"""

from __future__ import annotations

import pytest

from orchestrator.health.analysis import ProblemKind
from tests.fixtures_cluster import Shard, ShardFactory
from tests.fixtures_service import ServiceFactory
from tests.helpers.health import recoveries, start_service, wait_for
from topo.records import TabletType
from workflows.common import NEEDS_REBUILD_TAG
from workflows.emergency_reparent import EmergencyReparentOptions, emergency_reparent_shard

pytestmark = pytest.mark.slow


async def test_returning_old_primary_rejoins_as_replica_without_any_command(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    rs = await start_service(shard, service_factory, recovery_block_s=30)
    for i in range(1, 6):
        await shard.app_insert("zone1-101", i)
    await shard.wait_rows("zone1-103", list(range(1, 6)))

    shard.server("zone1-101").kill()
    new_primary = await wait_for(
        lambda: _primary_other_than(shard, "zone1-101"), 15, "an automatic failover"
    )
    old = await shard.tablet("zone1-101")
    assert old.type == TabletType.SPARE and old.target_type == TabletType.REPLICA

    await shard.server("zone1-101").start_again()  # comes back read-only, replicating nothing
    await wait_for(lambda: _type_is(shard, "zone1-101", TabletType.REPLICA), 15, "replica again")
    await shard.wait_replicating("zone1-101", timeout=15)
    await shard.app_insert(new_primary, 100)
    await shard.wait_rows("zone1-101", [*range(1, 6), 100])
    assert await shard.check_invariants() == new_primary
    back = recoveries(rs, ProblemKind.SPARE_TABLET_HEALTHY, "succeeded")
    assert back and back[0]["tablet"] == "zone1-101"
    assert (await shard.tablet("zone1-101")).target_type is None


async def test_returning_old_primary_with_errant_gtids_stays_spare_needing_rebuild(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    await shard.app_insert("zone1-101", 1)
    await shard.wait_rows("zone1-102", [1])
    await shard.wait_rows("zone1-103", [1])
    # The replicas stop receiving; the primary commits one more transaction and dies with it.
    for alias in ("zone1-102", "zone1-103"):
        await shard.admin(alias).execute("STOP SLAVE IO_THREAD")
    await shard.app_insert("zone1-101", 2)
    shard.server("zone1-101").kill()
    result = await emergency_reparent_shard(shard.env, EmergencyReparentOptions("commerce", "0"))
    assert result.new_primary in ("zone1-102", "zone1-103")
    await shard.app_insert(result.new_primary, 3)  # the new primary moves past the same seq

    await shard.server("zone1-101").start_again()
    rs = await start_service(shard, service_factory)
    tablet = await wait_for(
        lambda: _tagged(shard, "zone1-101"), 15, "the returning tablet marked needs_rebuild"
    )
    assert tablet.type == TabletType.SPARE
    assert "errant GTIDs 0-101-" in tablet.tags[NEEDS_REBUILD_TAG]
    assert result.new_primary in tablet.tags[NEEDS_REBUILD_TAG]
    await wait_for(
        lambda: any(
            p["kind"] == ProblemKind.NEEDS_REBUILD.value and p["tablet"] == "zone1-101"
            for p in rs.service.health.problems().get("commerce/0", [])
        ),
        10,
        "a NeedsRebuild problem",
    )
    (problem,) = [
        p for p in rs.service.health.problems()["commerce/0"]
        if p["kind"] == ProblemKind.NEEDS_REBUILD.value
    ]  # fmt: skip
    assert problem["detail"].startswith("needs rebuild: errant GTIDs 0-101-")
    # It never rejoined: still spare, not replicating, its extra row only on itself.
    assert (await shard.tablet("zone1-101")).type == TabletType.SPARE
    status = await shard.admin("zone1-101").status()
    assert status.replication is None or not status.replication.io_running
    assert 2 in await shard.row_ids("zone1-101")
    assert 2 not in await shard.row_ids(result.new_primary)
    assert recoveries(rs, ProblemKind.REPLICA_NOT_REPLICATING) == []


async def _primary_other_than(shard: Shard, alias: str) -> str | None:
    primary = await shard.primary_alias()
    return primary if primary not in (None, alias) else None


async def _type_is(shard: Shard, alias: str, want: TabletType) -> bool:
    return (await shard.tablet(alias)).type == want


async def _tagged(shard: Shard, alias: str) -> object:
    t = await shard.tablet(alias)
    return t if NEEDS_REBUILD_TAG in t.tags else None
