"""DDL in the binlog on tables of their own (merged tables: `test_ddl_locks.py`), and the
safe-mode window after a load that was interrupted."""

from __future__ import annotations

import pytest

from tests.fixtures_cluster import eventually
from tests.migration.conftest import (
    PARTS,
    TARGET,
    MigrationCluster,
    create_shard_table,
    insert_rows,
    merge_task,
    rows_of,
    seed,
    wait_target_equals,
)


def rename_task(mc: MigrationCluster) -> str:
    """One shard, one schema renamed: no table is merged, so DDL is applied as it comes."""
    return (
        "name: rename-db\n"
        f"target: {{host: {mc.target.host}, port: {mc.target.port}}}\n"
        f"sources:\n  - source-id: {mc.keyspace}/-80\n"
        'block-allow-list: {do-dbs: ["app"]}\n'
        "routes:\n  - {schema-pattern: app, target-schema: app_copy}\n"
    )


async def _columns(s: object, db: str, table: str) -> list[str]:
    rows = await s.fetch_rows(  # type: ignore[attr-defined]
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND "
        "TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    return [str(r[0]) for r in rows]


async def test_ddl_on_a_table_of_its_own_is_applied_with_the_target_names(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    async with await mc.primary_session("-80") as s:
        await create_shard_table(s, "app", "orders")
        await insert_rows(s, "app", "orders", range(1, 101))
    mc.start_scheduler()
    mc.start_worker("w1")
    await mc.ops().start(rename_task(mc))
    await wait_target_equals(mc, [("-80", "app", "orders")], ("app_copy", "orders"))
    async with await mc.primary_session("-80") as s:
        await s.execute(
            "ALTER TABLE app.orders ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'new'"
        )
        await s.execute("UPDATE app.orders SET status = 'paid' WHERE id <= 10")
        await s.execute("USE app")
        await s.execute("CREATE TABLE refunds (id INT PRIMARY KEY, amount DECIMAL(8,2))")
        await s.execute("INSERT INTO refunds VALUES (1, 9.99), (2, 19.99)")
        await s.execute("CREATE TABLE scratch (id INT PRIMARY KEY)")
        await s.execute("DROP TABLE scratch")
    await wait_target_equals(mc, [("-80", "app", "orders")], ("app_copy", "orders"))
    await wait_target_equals(mc, [("-80", "app", "refunds")], ("app_copy", "refunds"))
    async with await mc.target_session() as t:
        assert (await _columns(t, "app_copy", "orders"))[-1] == "status"

        async def scratch_gone() -> bool:
            return await _columns(t, "app_copy", "scratch") == []

        # The DROP comes after the refunds rows in the binlog: their arrival does not say it
        # was applied yet (a CREATE then DROP leaves no table, once caught up).
        await eventually(scratch_gone, 10, "app_copy.scratch created and dropped")
        paid = await t.fetch_rows("SELECT COUNT(*) FROM app_copy.orders WHERE status = 'paid'")
        assert paid[0][0] == 10


@pytest.mark.slow
async def test_an_interrupted_load_replays_in_safe_mode_exactly_until_its_last_snapshot(
    mcluster: MigrationCluster,
) -> None:
    """The worker dies after the first chunk; rows change upstream (in copied and not yet
    copied ranges); another worker reloads the rest in a newer snapshot and replays from the
    first snapshot in safe mode, leaving it once past the newer snapshot's position."""
    mc = mcluster
    await seed(mc, 600)
    mc.start_scheduler()
    doomed = mc.start_worker_process("w1", faults="load.after_chunk")
    await mc.ops().start(merge_task(mc))

    async def dead() -> bool:
        return doomed.poll() is not None

    await eventually(dead, 30, "the worker to die after its first chunk")
    for shard, db, table in PARTS:
        async with await mc.primary_session(shard) as s:
            first = 1 if shard == "-80" else 10_000_001
            await s.execute(f"UPDATE {db}.{table} SET n = -1 WHERE id IN (%s, %s)",
                            (first + 5, first + 500))  # fmt: skip
            await s.execute(f"DELETE FROM {db}.{table} WHERE id IN (%s, %s)",
                            (first + 6, first + 501))  # fmt: skip
            await insert_rows(s, db, table, [first + 100_000])
    async with await mc.target_session() as t:
        interrupted = {
            str(sid): str(until)
            for sid, until in await t.fetch_rows(
                "SELECT source_id, safe_mode_until FROM dm_meta.`merge-orders_syncer_checkpoint`"
                " WHERE load_state = 'loading'"
            )
        }
    assert interrupted, "no load was interrupted after a chunk"
    mc.start_worker_process("w2")
    await wait_target_equals(mc, PARTS, TARGET)
    async with await mc.target_session() as t:
        rows = await t.fetch_rows(
            "SELECT source_id, gtid, safe_mode_until, load_state FROM "
            "dm_meta.`merge-orders_syncer_checkpoint` ORDER BY source_id"
        )
        got = await rows_of(t, *TARGET)
    for source_id, gtid, until, state in rows:
        assert state == "done"
        # The exit point is the newer snapshot's position, past the first one's...
        seq = int(str(until).rsplit("-", 1)[1])
        if str(source_id) in interrupted:
            assert seq > int(interrupted[str(source_id)].rsplit("-", 1)[1])
        # ...and the sync has passed it.
        assert int(str(gtid).rsplit("-", 1)[1]) >= seq
    assert any(r[2] == -1 for r in got)

    async def left_safe_mode() -> bool:
        st = await mc.ops().query_status("merge-orders")
        return all(e["subTaskStatus"][0]["sync"].get("safeMode") is False for e in st["sources"])

    await eventually(left_safe_mode, 10, "both subtasks to leave safe mode")
