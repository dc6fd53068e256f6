"""SIGKILL a worker process at every named fault point of the load and the sync; another
worker takes the subtasks over and the target converges to the union of the sources, row by
row: nothing lost, nothing applied twice."""

from __future__ import annotations

import pytest

from migration.faults import KNOWN_POINTS
from tests.fixtures_cluster import eventually
from tests.migration.conftest import (
    PARTS,
    TARGET,
    MigrationCluster,
    ShardWriter,
    merge_task,
    seed,
    wait_target_equals,
)
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard

LOAD_POINTS = sorted(p for p in KNOWN_POINTS if p.startswith("load."))
SYNC_POINTS = sorted(p for p in KNOWN_POINTS if p.startswith("sync.") and p != "sync.during_switch")


async def _killed(proc: object, timeout: float) -> None:
    async def dead() -> bool:
        return proc.poll() is not None  # type: ignore[attr-defined]

    await eventually(dead, timeout, "the worker to kill itself at its fault point", every=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("point", LOAD_POINTS + SYNC_POINTS)
async def test_worker_killed_at_fault_point_converges_on_another_worker(
    mcluster: MigrationCluster, point: str
) -> None:
    mc = mcluster
    ids = await seed(mc, 700)  # 4 chunks of 200 per shard: load points are reached
    writers = [ShardWriter(mc, sh, db, t, first_id=ids[sh][-1] + 1) for sh, db, t in PARTS]
    if point.startswith("sync."):
        for w in writers:
            w.start(ids[w.shard])
    mc.start_scheduler()
    doomed = mc.start_worker_process("w1", faults=point)
    await mc.ops().start(merge_task(mc))
    await _killed(doomed, 60)
    assert doomed.returncode == -9, mc.worker_log("w1")[-3000:]
    mc.start_worker_process("w2")
    for w in writers:
        if point.startswith("sync."):
            await w.wait_acked(100)
            await w.stop()
    await wait_target_equals(mc, PARTS, TARGET, timeout=90)
    status = await mc.ops().query_status("merge-orders")
    assert {e["sourceStatus"]["worker"] for e in status["sources"]} == {"w2"}
    assert all(e["sourceStatus"]["epoch"] >= 2 for e in status["sources"])


@pytest.mark.slow
async def test_worker_killed_during_a_source_switch_converges(mcluster: MigrationCluster) -> None:
    """The subtask reads shard -80 from its replica; a PRS makes that replica the primary, so
    the subtask switches to the other tablet, and the worker dies in the middle of the switch."""
    mc = mcluster
    ids = await seed(mc, 300)
    writers = [ShardWriter(mc, sh, db, t, first_id=ids[sh][-1] + 1) for sh, db, t in PARTS]
    for w in writers:
        w.start(ids[w.shard])
    mc.start_scheduler()
    doomed = mc.start_worker_process("w1", faults="sync.during_switch")
    await mc.ops().start(merge_task(mc))
    await writers[0].wait_acked(50)
    primary = await mc.primary_alias("-80")
    replica = next(a for a in ("zone1-101", "zone1-102") if a != primary)
    await planned_reparent_shard(
        mc.env, PlannedReparentOptions(mc.keyspace, "-80", new_primary=replica)
    )
    await _killed(doomed, 30)
    assert doomed.returncode == -9
    mc.start_worker_process("w2")
    for w in writers:
        await w.wait_acked(50)
        await w.stop()
    await wait_target_equals(mc, PARTS, TARGET, timeout=90)
