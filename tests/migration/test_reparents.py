"""A running task follows its source shards through reparents (DM's manual "pause, switch the
upstream, resume", done by itself), and pauses with a divergence error when the tablet it would
resume on lacks what the target already has."""

from __future__ import annotations

import pytest

from tests.fixtures_cluster import eventually
from tests.fixtures_service import ServiceFactory
from tests.migration.conftest import (
    PARTS,
    TARGET,
    MigrationCluster,
    ShardWriter,
    insert_rows,
    merge_task,
    rows_of,
    seed,
    wait_target_equals,
)
from workflows.emergency_reparent import EmergencyReparentOptions, emergency_reparent_shard
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard


async def _subtask(mc: MigrationCluster, source: str, task: str = "merge-orders") -> dict:
    st = await mc.ops().query_status(task)
    entry = next(e for e in st["sources"] if e["sourceStatus"]["source"] == source)
    return entry["subTaskStatus"][0]


async def _reads_from(mc: MigrationCluster, source: str, alias: str) -> bool:
    sub = await _subtask(mc, source)
    return sub["unit"] == "Sync" and str(sub["sync"].get("source", "")).startswith(alias + " ")


@pytest.mark.slow
async def test_task_follows_a_planned_reparent_of_a_source_shard(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    ids = await seed(mc, 300)
    writers = [ShardWriter(mc, sh, db, t, first_id=ids[sh][-1] + 1) for sh, db, t in PARTS]
    for w in writers:
        w.start(ids[w.shard])
    mc.start_scheduler()
    mc.start_worker("w1")
    await mc.ops().start(merge_task(mc))
    source = f"{mc.keyspace}/-80"
    # It reads the shard's replica, zone1-102.
    await eventually(lambda: _reads_from(mc, source, "zone1-102"), 30, "sync from zone1-102")
    await writers[0].wait_acked(100)
    await planned_reparent_shard(
        mc.env, PlannedReparentOptions(mc.keyspace, "-80", new_primary="zone1-102")
    )
    # zone1-102 is the primary now: the replica to read is the old primary, zone1-101.
    await eventually(lambda: _reads_from(mc, source, "zone1-101"), 20, "sync from zone1-101")
    for w in writers:
        await w.wait_acked(100)
        await w.stop()
    assert writers[0].acked >= 200
    await wait_target_equals(mc, PARTS, TARGET)


@pytest.mark.slow
async def test_task_follows_an_automatic_failover_after_the_primary_dies(
    mcluster: MigrationCluster, service_factory: ServiceFactory
) -> None:
    """The service's health checks find the dead primary and run ERS; the task (run by the
    service's own worker, bound by its leader) moves on to the shard's new primary."""
    mc = mcluster
    ids = await seed(mc, 300)
    writers = [ShardWriter(mc, sh, db, t, first_id=ids[sh][-1] + 1) for sh, db, t in PARTS]
    for w in writers:
        w.start(ids[w.shard])
    await service_factory(mc, recovery_block_s=5)  # type: ignore[arg-type]
    await mc.ops().start(merge_task(mc))
    source = f"{mc.keyspace}/80-"
    await eventually(lambda: _reads_from(mc, source, "zone1-202"), 30, "sync from zone1-202")
    await writers[1].wait_acked(100)
    mc.state.tablet("zone1-201").server.kill()

    async def failed_over() -> bool:
        return await mc.primary_alias("80-") == "zone1-202"

    await eventually(failed_over, 30, "the service to fail over to zone1-202")
    # No replica is left in the shard, so the task reads the new primary (replica,primary).
    await eventually(lambda: _reads_from(mc, source, "zone1-202"), 20, "sync from zone1-202")
    for w in writers:
        await w.wait_acked(100)
        await w.stop()
    assert writers[1].acked >= 200
    await wait_target_equals(mc, PARTS, TARGET)


@pytest.mark.slow
async def test_subtask_pauses_with_a_divergence_error_when_the_new_tablet_lacks_the_checkpoint(
    mcluster: MigrationCluster,
) -> None:
    """The task reads shard 80- from its primary only; the replica stops receiving; the target
    gets rows the replica never will; the primary dies and the replica is promoted. Resuming
    there would keep rows downstream that the shard lost, so the subtask pauses, naming the
    GTIDs, and leaves the target as it was."""
    mc = mcluster
    await seed(mc, 100)
    mc.start_scheduler()
    mc.start_worker("w1")
    task = merge_task(mc).replace(
        f"  - source-id: {mc.keyspace}/80-\n",
        f"  - source-id: {mc.keyspace}/80-\n    tablet-types: primary\n",
    )
    await mc.ops().start(task)
    source = f"{mc.keyspace}/80-"
    await wait_target_equals(mc, PARTS, TARGET)
    async with await mc.session_on("zone1-202") as replica:
        await replica.execute("STOP SLAVE IO_THREAD")
    lost = list(range(20_000_001, 20_000_051))
    async with await mc.primary_session("80-") as p:
        await insert_rows(p, "shard_db_2", "shard_table_1", lost)

    async def downstream() -> bool:
        async with await mc.target_session() as t:
            return set(lost) <= {r[0] for r in await rows_of(t, *TARGET)}

    await eventually(downstream, 20, "the target to hold the rows only the primary has")
    async with await mc.target_session() as t:
        ((before,),) = await t.fetch_rows(
            "SELECT gtid FROM dm_meta.`merge-orders_syncer_checkpoint` WHERE source_id = %s",
            (source,),
        )
    mc.state.tablet("zone1-201").server.kill()
    await emergency_reparent_shard(mc.env, EmergencyReparentOptions(mc.keyspace, "80-"))
    assert await mc.primary_alias("80-") == "zone1-202"

    async def paused() -> bool:
        return (await _subtask(mc, source))["stage"] == "Paused"

    await eventually(paused, 20, "the subtask to pause")
    sub = await _subtask(mc, source)
    (error,) = sub["result"]["errors"]
    assert "lacks transactions the target already has" in error["message"], error
    assert error["checkpoint"] == before
    assert before in error["message"]
    task_rec = await mc.mstore.get_task("merge-orders")
    assert task_rec is not None and source in task_rec.paused_sources
    # The other shard's subtask goes on.
    assert (await _subtask(mc, f"{mc.keyspace}/-80"))["stage"] == "Running"
    async with await mc.target_session() as t:
        assert set(lost) <= {r[0] for r in await rows_of(t, *TARGET)}
