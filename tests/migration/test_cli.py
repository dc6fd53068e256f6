"""The migration commands through the real CLI (`orchestrator ctl`, as a subprocess) and the
service's HTTP API: the task file is read on the client, results are DM's JSON on stdout,
errors one line on stderr, and exit codes say what happened."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures_cluster import eventually
from tests.fixtures_service import ServiceFactory
from tests.migration.conftest import (
    PARTS,
    TARGET,
    MigrationCluster,
    merge_task,
    seed,
    wait_target_equals,
)


async def ctl(url: str, *args: str, home: Path | None = None) -> tuple[int, dict | None, str]:
    """(exit code, the JSON on stdout or None, stderr). With `home`: run in that directory,
    with it as HOME too (whatever state the CLI kept would land there)."""
    env = None if home is None else {**os.environ, "HOME": str(home)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", "ctl", "--server", url, "--quiet", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=home, env=env,
    )  # fmt: skip
    out, err = await proc.communicate()
    doc = json.loads(out) if out.strip() else None
    assert proc.returncode is not None
    return proc.returncode, doc, err.decode()


async def test_task_lifecycle_through_the_cli(
    mcluster: MigrationCluster, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    mc = mcluster
    await seed(mc, 300)
    svc = await service_factory(mc)  # type: ignore[arg-type]
    task = tmp_path / "task.yaml"
    task.write_text(merge_task(mc))

    code, doc, err = await ctl(svc.url, "check-task", str(task))
    assert code == 0, err
    assert doc is not None and doc["result"] is True
    assert doc["targets"]["shard_db.shard_table"] == [
        f"{mc.keyspace}/-80:shard_db_1.shard_table_1",
        f"{mc.keyspace}/80-:shard_db_2.shard_table_1",
    ]

    code, doc, err = await ctl(svc.url, "start-task", str(task))
    assert code == 0, err
    assert doc is not None and [s["source"] for s in doc["sources"]] == [
        f"{mc.keyspace}/-80", f"{mc.keyspace}/80-",
    ]  # fmt: skip
    await wait_target_equals(mc, PARTS, TARGET)

    code, doc, err = await ctl(svc.url, "start-task", str(task))
    assert code == 1 and "ALREADY_EXISTS" in err and "merge-orders" in err

    code, doc, err = await ctl(
        svc.url, "pause-task", "merge-orders", "--source", f"{mc.keyspace}/-80"
    )
    assert code == 0, err

    async def stages() -> list[str]:
        _, d, _ = await ctl(svc.url, "query-status", "merge-orders")
        assert d is not None
        return [e["subTaskStatus"][0]["stage"] for e in d["sources"]]

    async def paused_one() -> bool:
        return await stages() == ["Paused", "Running"]

    await eventually(paused_one, 10, "shard -80's subtask to pause")
    code, doc, err = await ctl(svc.url, "resume-task", "merge-orders")
    assert code == 0, err

    async def running() -> bool:
        return await stages() == ["Running", "Running"]

    await eventually(running, 10, "both subtasks to run")
    code, doc, err = await ctl(svc.url, "query-status")
    assert code == 0 and doc is not None
    assert [t["taskName"] for t in doc["tasks"]] == ["merge-orders"]

    code, doc, err = await ctl(svc.url, "stop-task", "merge-orders")
    assert code == 0, err
    code, doc, err = await ctl(svc.url, "query-status", "merge-orders")
    assert code == 1 and "NOT_FOUND" in err and "merge-orders" in err


async def test_the_cli_is_stateless_any_instance_answers_for_the_task(
    mcluster: MigrationCluster, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    """DM's caution 'the CLI is stateless' as a guarantee: every command is one request to
    whichever instance is named, the task lives in etcd, so a task started through one
    instance is paused, read, resumed and stopped through another, and the CLI leaves nothing
    behind in its working directory or HOME."""
    mc = mcluster
    await seed(mc, 100)
    a = await service_factory(mc)  # type: ignore[arg-type]
    b = await service_factory(mc)  # type: ignore[arg-type]
    home = tmp_path / "home"
    home.mkdir()
    task = tmp_path / "task.yaml"
    task.write_text(merge_task(mc))

    async def stages(url: str) -> list[str]:
        code, d, err = await ctl(url, "query-status", "merge-orders", home=home)
        assert code == 0 and d is not None, err
        return [e["subTaskStatus"][0]["stage"] for e in d["sources"]]

    async def both(want: list[str]) -> bool:
        return await stages(a.url) == want and await stages(b.url) == want

    code, _, err = await ctl(a.url, "start-task", str(task), home=home)
    assert code == 0, err
    await wait_target_equals(mc, PARTS, TARGET)
    await eventually(lambda: both(["Running", "Running"]), 10, "both instances: running")
    code, _, err = await ctl(b.url, "pause-task", "merge-orders", home=home)
    assert code == 0, err
    await eventually(lambda: both(["Paused", "Paused"]), 10, "both instances: paused")
    code, _, err = await ctl(a.url, "resume-task", "merge-orders", home=home)
    assert code == 0, err
    await eventually(lambda: both(["Running", "Running"]), 10, "both instances: running again")
    code, _, err = await ctl(b.url, "stop-task", "merge-orders", home=home)
    assert code == 0, err
    for url in (a.url, b.url):
        code, _, err = await ctl(url, "query-status", "merge-orders", home=home)
        assert code == 1 and "NOT_FOUND" in err, err
    assert list(home.iterdir()) == []


async def test_cli_errors_are_one_line_with_the_right_exit_code(
    mcluster: MigrationCluster, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    mc = mcluster
    svc = await service_factory(mc)  # type: ignore[arg-type]
    bad = tmp_path / "bad.yaml"
    bad.write_text(merge_task(mc).replace("do-dbs", "do-db"))
    code, doc, err = await ctl(svc.url, "check-task", str(bad))
    assert code == 1 and doc is None
    assert (
        "error: INVALID_ARGUMENT: block-allow-list.do-db: unknown key (did you mean 'do-dbs'?)"
        in err
    )
    assert "Traceback" not in err
    code, _, err = await ctl(svc.url, "start-task", str(tmp_path / "missing.yaml"))
    assert code == 2 and "cannot read the task file" in err
    code, _, err = await ctl(svc.url, "pause-task", "not a name")
    assert code == 1 and "malformed task name" in err
    failing = tmp_path / "failing.yaml"
    failing.write_text(merge_task(mc))  # no tables exist yet: every route matches nothing
    code, _, err = await ctl(svc.url, "check-task", str(failing))
    assert code == 1 and "FAILED_PRECONDITION" in err and "routes[0]" in err


async def test_migration_reads_need_no_token_and_changes_do(
    mcluster: MigrationCluster, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    mc = mcluster
    await seed(mc, 10)
    svc = await service_factory(mc, api_token="s3cret")  # type: ignore[arg-type]
    task = tmp_path / "task.yaml"
    task.write_text(merge_task(mc))
    code, doc, err = await ctl(svc.url, "query-status")
    assert code == 0 and doc == {"result": True, "msg": "", "tasks": []}, err
    code, doc, err = await ctl(svc.url, "check-task", str(task))
    assert code == 0, err
    code, _, err = await ctl(svc.url, "start-task", str(task))
    assert code == 1 and "UNAUTHENTICATED" in err
    code, doc, err = await ctl(svc.url, "--token", "s3cret", "start-task", str(task))
    assert code == 0, err
