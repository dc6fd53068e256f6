"""A 2-shard keyspace merged into one target table: full load, then binlog sync under a steady
writer on both shards; the target must equal the union of the shards row by row."""

from __future__ import annotations

import asyncio

from tests.fixtures_cluster import eventually
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


async def test_two_shards_merge_into_one_table_under_a_steady_writer(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    ids = await seed(mc)
    writers = [
        ShardWriter(mc, shard, db, table, first_id=ids[shard][-1] + 1) for shard, db, table in PARTS
    ]
    for w in writers:
        w.start(ids[w.shard])
    mc.start_scheduler()
    mc.start_worker("w1")
    result = await mc.ops().start(merge_task(mc))
    assert result["result"] is True
    assert [s["source"] for s in result["sources"]] == [f"{mc.keyspace}/-80", f"{mc.keyspace}/80-"]
    for w in writers:
        await w.wait_acked(300)
    for w in writers:
        await w.stop()
    assert all(w.acked >= 300 for w in writers)
    want = await wait_target_equals(mc, PARTS, TARGET)
    assert len(want) > 2000
    status = await mc.ops().query_status("merge-orders")
    subtasks = [e["subTaskStatus"][0] for e in status["sources"]]
    assert [st["unit"] for st in subtasks] == ["Sync", "Sync"]
    assert [st["stage"] for st in subtasks] == ["Running", "Running"]
    assert all(e["sourceStatus"]["worker"] == "w1" for e in status["sources"])


async def test_full_mode_copies_and_finishes(mcluster: MigrationCluster) -> None:
    mc = mcluster
    await seed(mc, 700)
    mc.start_scheduler()
    mc.start_worker("w1")
    await mc.ops().start(merge_task(mc, name="copy-once", **{"task-mode": "full"}))
    await wait_target_equals(mc, PARTS, TARGET)

    async def finished() -> bool:
        st = await mc.ops().query_status("copy-once")
        return [e["subTaskStatus"][0]["stage"] for e in st["sources"]] == ["Finished"] * 2

    await eventually(finished, 20, "both subtasks to finish")
    # A full-mode task copies once: later writes stay upstream only.
    async with await mc.primary_session("-80") as s:
        await insert_rows(s, "shard_db_1", "shard_table_1", [999_999])
    await asyncio.sleep(1.0)  # long enough for a sync (0.1 s heartbeats) to have applied it
    async with await mc.target_session() as t:
        assert 999_999 not in {r[0] for r in await rows_of(t, *TARGET)}
