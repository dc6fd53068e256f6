"""Task and source operations over their whole life: stop and start again (resuming from the
checkpoints on the target), and external sources registered with operate-source."""

from __future__ import annotations

from pathlib import Path

import pytest

from migration.errors import TaskConfigError
from orchestrator.local.mariadb import start_mariadb
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


async def test_a_task_stopped_and_started_again_resumes_from_its_checkpoints(
    mcluster: MigrationCluster,
) -> None:
    """Even after its subtasks moved between workers (higher epochs downstream), a task
    started again under the same name is not fenced and does not load again."""
    mc = mcluster
    await seed(mc, 200)
    mc.start_scheduler()
    mc.start_worker("w1")
    ops = mc.ops()
    await ops.start(merge_task(mc))
    await wait_target_equals(mc, PARTS, TARGET)
    first = {b.source: b.epoch for b in await mc.mstore.list_bindings("merge-orders")}
    await ops.stop("merge-orders")
    assert await mc.mstore.list_bindings("merge-orders") == []
    async with await mc.primary_session("-80") as s:
        await insert_rows(s, "shard_db_1", "shard_table_1", range(5_000_001, 5_000_101))
    await ops.start(merge_task(mc))
    await wait_target_equals(mc, PARTS, TARGET)
    again = {b.source: b.epoch for b in await mc.mstore.list_bindings("merge-orders")}
    assert all(again[s] > first[s] for s in first)

    async def syncing() -> bool:
        st = await ops.query_status("merge-orders")
        subs = [e["subTaskStatus"][0] for e in st["sources"]]
        return all(s["stage"] == "Running" and s["unit"] == "Sync" for s in subs)

    await eventually(syncing, 10, "both subtasks to sync again")
    st = await ops.query_status("merge-orders")
    for e in st["sources"]:
        sub = e["subTaskStatus"][0]
        assert sub["result"] is None
        assert "rowsPerSecond" not in sub["load"]  # no load ran the second time


async def test_operate_source_registers_an_external_source_for_tasks(
    mcluster: MigrationCluster, tmp_path: Path
) -> None:
    mc = mcluster
    legacy = await start_mariadb(tmp_path / "legacy", server_id=778)
    try:
        ops = mc.ops()
        await ops.operate_source("create", "legacy-2", legacy.host, legacy.port)
        with pytest.raises(TaskConfigError, match="registered already"):
            await ops.operate_source("create", "legacy-2", legacy.host, legacy.port)
        with pytest.raises(TaskConfigError, match="a shard of the topology is a source already"):
            await ops.operate_source("create", "commerce/-80", legacy.host, legacy.port)
        shown = await ops.operate_source("show")
        assert [s["source"] for s in shown["sources"]] == ["legacy-2"]
        assert shown["sources"][0]["from"] == {"host": legacy.host, "port": legacy.port}
        from mysqlctl.session import open_session

        async with await open_session(mc.creds.params(legacy.host, legacy.port)) as s:
            await create_shard_table(s, "legacy_db", "items")
            await insert_rows(s, "legacy_db", "items", range(1, 51))
            want = await rows_of(s, "legacy_db", "items")
        task = (
            "name: from-legacy\n"
            f"target: {{host: {mc.target.host}, port: {mc.target.port}}}\n"
            "sources:\n  - source-id: legacy-2\n"
            'block-allow-list: {do-dbs: ["legacy_db"]}\n'
        )
        mc.start_scheduler()
        mc.start_worker("w1")
        await ops.start(task)

        async def copied() -> bool:
            async with await mc.target_session() as t:
                try:
                    return await rows_of(t, "legacy_db", "items") == want
                except Exception:
                    return False

        await eventually(copied, 30, "the registered source's table on the target")
        with pytest.raises(TaskConfigError, match="used by task"):
            await ops.operate_source("stop", "legacy-2")
        await ops.stop("from-legacy")
        await ops.operate_source("stop", "legacy-2")
        assert (await ops.operate_source("show"))["sources"] == []
    finally:
        legacy.kill()
