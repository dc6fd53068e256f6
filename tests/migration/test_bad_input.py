"""What a user gets wrong, and what goes wrong around a task: check-task names every problem
against the real servers, an unreachable source or target is waited out with no person, and
a key conflict between merged shards pauses the subtask naming the key and both sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from migration.errors import CheckFailedError, TaskConfigError
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


def _keys(problems: list[TaskConfigError]) -> dict[str, str]:
    return {p.key: p.message for p in problems}


async def test_check_task_reports_every_problem_naming_its_key(mcluster: MigrationCluster) -> None:
    mc = mcluster
    await seed(mc, 10)
    async with await mc.primary_session("-80") as s:
        await s.execute("CREATE TABLE shard_db_1.no_key (a INT, b INT)")
        await create_shard_table(s, "shard_db_1", "shard_table_9")
    async with await mc.session_on("zone1-202") as replica:  # what shard 80- is read from
        await replica.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
    task = (
        merge_task(mc)
        .replace(
            "routes:\n",
            "routes:\n"
            '  - {schema-pattern: "nothing_*", target-schema: nowhere}\n'
            '  - {schema-pattern: "shard_db_1", table-pattern: "shard_table_9",'
            " target-schema: shard_db, target-table: other}\n",
        )
        .replace("shard-mode: pessimistic\n", "")
    )
    _spec, report = await mc.ops().check(task)
    problems = _keys(report.problems)
    assert "has no primary key or NOT NULL unique key" in problems["shard_db_1.no_key"]
    assert "matches no migrated table" in problems["routes[0]"]
    assert "claimed by routes[1], routes[2]" in problems["shard_db_1.shard_table_9"]
    assert "set shard-mode: pessimistic" in problems["shard-mode"]
    assert "binlog_row_metadata=MINIMAL; needs FULL" in problems["sources[1]"]
    assert not report.ok
    with pytest.raises(CheckFailedError) as e:
        await mc.ops().start(task)
    assert len(e.value.problems) == len(report.problems)
    assert await mc.mstore.get_task("merge-orders") is None  # nothing started


async def test_check_task_names_unreachable_servers_unknown_shards_and_missing_grants(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    await seed(mc, 10)
    task = (
        merge_task(mc)
        .replace(f"port: {mc.target.port}}}", "port: 1}")
        .replace(f"  - source-id: {mc.keyspace}/80-\n", f"  - source-id: {mc.keyspace}/c0-\n")
    )
    _spec, report = await mc.ops().check(task)
    problems = _keys(report.problems)
    assert "target 127.0.0.1:1 unreachable" in problems["target"]
    assert "shard commerce/c0- does not exist" in problems["sources[1].source-id"]
    async with await mc.target_session() as t:
        await t.execute("CREATE USER IF NOT EXISTS 'weak'@'%' IDENTIFIED BY 'weak'")
        await t.execute("GRANT SELECT ON *.* TO 'weak'@'%'")
    for alias in ("zone1-101", "zone1-102", "zone1-201", "zone1-202"):
        async with await mc.session_on(alias) as s:
            await s.execute("SET SESSION sql_log_bin = 0")
            await s.execute("CREATE USER IF NOT EXISTS 'weak'@'%' IDENTIFIED BY 'weak'")
            await s.execute("GRANT SELECT ON *.* TO 'weak'@'%'")
    from migration.context import Credentials
    from migration.tasks import TaskOps

    weak = TaskOps(mc.store, Credentials("weak", "weak"))
    _spec, report = await weak.check(merge_task(mc))
    problems = _keys(report.problems)
    assert "lacks INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX on *.*" in problems["target"]
    assert "lacks REPLICATION SLAVE" in problems["sources[0]"]


async def test_bad_task_files_are_refused_before_any_server_is_asked(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    with pytest.raises(TaskConfigError, match=r"task_mode: unknown key \(did you mean 'task-mode'"):
        await mc.ops().check(merge_task(mc).replace("task-mode:", "task_mode:"))
    with pytest.raises(TaskConfigError, match="not valid YAML"):
        await mc.ops().check("name: [unclosed\n")
    with pytest.raises(TaskConfigError, match="credentials never go into a task file"):
        await mc.ops().check(merge_task(mc) + "password: secret\n")


@pytest.mark.slow
async def test_subtasks_wait_out_an_unreachable_target_and_an_external_source(
    mcluster: MigrationCluster, tmp_path: Path
) -> None:
    """The target dies, then an external source dies; each subtask retries with backoff,
    reports the error, and resumes by itself when the server is back."""
    mc = mcluster
    legacy = await start_mariadb(tmp_path / "legacy", server_id=777)
    try:
        async with await _session(mc, legacy) as s:
            await create_shard_table(s, "shard_db_3", "shard_table_1")
            await insert_rows(s, "shard_db_3", "shard_table_1", range(30_000_001, 30_000_201))
        task = merge_task(mc).replace(
            "block-allow-list:",
            f"  - source-id: legacy-1\n    from: {{host: {legacy.host}, port: {legacy.port}}}\n"
            "block-allow-list:",
        )
        await seed(mc, 100)
        mc.start_scheduler()
        mc.start_worker("w1")
        await mc.ops().start(task)
        parts = [*PARTS, ("legacy", "shard_db_3", "shard_table_1")]
        await _wait_equal(mc, parts, legacy)
        # The target dies; writes go on upstream.
        mc.target.kill()
        async with await mc.primary_session("-80") as s:
            await insert_rows(s, "shard_db_1", "shard_table_1", range(40_000_001, 40_000_051))

        async def reports(code: str) -> bool:
            st = await mc.ops().query_status("merge-orders")
            errs = [e["subTaskStatus"][0]["result"] for e in st["sources"]]
            return any(r and code in str(r) for r in errs)

        await eventually(lambda: reports("TARGET_UNAVAILABLE"), 20, "the target outage reported")
        await mc.target.start_again()
        await _wait_equal(mc, parts, legacy)
        # The external source dies; its rows written meanwhile arrive once it is back.
        legacy.kill()
        await eventually(lambda: reports("SOURCE_UNAVAILABLE"), 20, "the source outage reported")
        await legacy.start_again()
        async with await _session(mc, legacy) as s:
            await insert_rows(s, "shard_db_3", "shard_table_1", range(30_001_001, 30_001_051))
        await _wait_equal(mc, parts, legacy)
        st = await mc.ops().query_status("merge-orders")
        assert [e["subTaskStatus"][0]["stage"] for e in st["sources"]] == ["Running"] * 3
    finally:
        legacy.kill()


async def test_a_key_conflict_between_merged_shards_pauses_naming_both_sources(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    await seed(mc, 50)
    mc.start_scheduler()
    mc.start_worker("w1")
    await mc.ops().start(merge_task(mc))
    await wait_target_equals(mc, PARTS, TARGET)
    clash = 10_000_001  # shard 80-'s first id
    async with await mc.primary_session("-80") as s:
        await s.execute(
            "INSERT INTO shard_db_1.shard_table_1 (id, v) VALUES (%s, 'from -80')", (clash,)
        )

    async def paused() -> dict | None:
        st = await mc.ops().query_status("merge-orders")
        for e in st["sources"]:
            sub = e["subTaskStatus"][0]
            if sub["stage"] == "Paused":
                return sub
        return None

    await eventually(lambda: _truthy(paused()), 20, "the conflicting subtask to pause")
    sub = await paused()
    assert sub is not None
    (error,) = sub["result"]["errors"]
    assert error["table"] == "shard_db.shard_table"
    assert error["key"] == f"id={clash}"
    assert error["sources"] == [
        f"{mc.keyspace}/-80",
        f"{mc.keyspace}/80- (shard_db_2.shard_table_1)",
    ]
    assert "was not overwritten" in error["message"]
    async with await mc.target_session() as t:
        row = next(r for r in await rows_of(t, *TARGET) if r[0] == clash)
    assert row[1] == f"v{clash}"  # shard 80-'s row is still the one downstream


async def _truthy(aw: object) -> bool:
    return bool(await aw)  # type: ignore[misc]


async def _session(mc: MigrationCluster, server: object):  # type: ignore[no-untyped-def]
    from mysqlctl.session import open_session

    return await open_session(mc.creds.params(server.host, server.port))  # type: ignore[attr-defined]


async def _wait_equal(
    mc: MigrationCluster, parts: list[tuple[str, str, str]], legacy: object
) -> None:
    """Like wait_target_equals, reading the external source's table on its own server."""
    from tests.migration.conftest import digest

    async def equal() -> bool:
        want = []
        for shard, db, table in parts:
            if shard == "legacy":
                async with await _session(mc, legacy) as s:
                    want.extend(await rows_of(s, db, table))
            else:
                async with await mc.primary_session(shard) as s:
                    want.extend(await rows_of(s, db, table))
        want.sort(key=lambda r: r[0])
        try:
            async with await mc.target_session() as t:
                got = await rows_of(t, *TARGET)
        except Exception:
            return False
        return digest(want) == digest(got)

    await eventually(equal, 60, "the target to equal its three sources", every=0.3)
