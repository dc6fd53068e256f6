"""deploy/ansible for real: ansible-core (the `test` extra) runs deploy.yml, start.yml,
rolling_update.yml and stop.yml in process mode against loopback "hosts"
(`ansible_connection=local`, one directory and port set each): 2 service instances and 3
workers on the migration cluster's etcd, with a merge task and a steady writer on both shards.

The rolling update replaces every process (new pid), one at a time, the leader last; no
subtask's checkpoint stands still for more than a few seconds; the target equals its sources row
by row afterwards; the playbook's output names each host's step. stop.yml leaves nothing
running. A second test runs scale_out.yml and scale_in.yml on single hosts (-l). Whatever happens,
every process the playbooks started is killed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mysqlctl.errors import MysqlError
from orchestrator.local import procs
from orchestrator.local.ports import free_port
from tests.fixtures_cluster import eventually
from tests.migration.conftest import (
    PARTS,
    TARGET,
    MigrationCluster,
    ShardWriter,
    insert_rows,
    mcluster,
    merge_task,
    seed,
    wait_target_equals,
)

ANSIBLE_DIR = Path(__file__).resolve().parents[2] / "deploy" / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOK = BIN / "ansible-playbook"
MASTERS = ("orc1", "orc2")
WORKERS = ("worker1", "worker2", "worker3")
TASK = "merge-orders"
# "The task never stops for more than a few seconds": the longest a source's checkpoint may
# stand still while its writer writes.
MAX_STALL_S = 6.0

__all__ = ["mcluster"]  # the fixture, imported

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        not PLAYBOOK.exists(), reason="ansible-core not installed (pip install '.[test]')"
    ),
]


def inventory(mc: MigrationCluster, hosts_dir: Path, ports: dict[str, int]) -> str:
    """An inventory in the seed's shape: groups, one line per "host" with its own vars."""
    lines = ["[orchestrator_servers]"]
    for m in MASTERS:
        lines.append(f"{m} ansible_host=127.0.0.1 listen_host=127.0.0.1 listen_port={ports[m]} "
                     f"deploy_dir={hosts_dir / m}")  # fmt: skip
    lines += ["", "[worker_servers]"]
    for w in WORKERS:
        lines.append(f"{w} ansible_host=127.0.0.1 deploy_dir={hosts_dir / w}")
    lines += [
        "", "[all:vars]",
        "ansible_connection = local",
        f"ansible_python_interpreter = {sys.executable}",
        "deploy_mode = process",
        f"orchestrator_bin = {BIN / 'orchestrator'}",
        f"etcd_endpoints = {','.join(mc.state.etcd_endpoints)}",
        f"topo_root = {mc.store.root}",
        f"orc_mysql_user = {mc.creds.user}",
        f"orc_mysql_password = {mc.creds.password}",
        "orc_log_json = false",
        "orc_election_ttl_s = 2",
        "orc_stop_timeout_s = 15",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


async def playbook(work: Path, name: str, *args: str) -> str:
    """Run one playbook; its whole output (AssertionError with it if it failed)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
           # ansible refuses a locale that is not UTF-8 (LC_ALL=C in some CI shells)
           "LC_ALL": "C.UTF-8",
           "ANSIBLE_HOME": str(work / "ansible-home"), "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
           "ANSIBLE_REMOTE_TEMP": str(work / "tmp"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_DEPRECATION_WARNINGS": "false"}  # fmt: skip
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        str(PLAYBOOK), "-i", str(work / "inventory.ini"), "-e", f"@{work / 'vars.json'}",
        str(ANSIBLE_DIR / name), *args, cwd=ANSIBLE_DIR, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    (work / f"{name}.log").write_text(text)
    print(f"--- {name} ({time.monotonic() - t0:.1f}s)\n{text}", file=sys.stderr)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{text[-6000:]}"
    return text


def pid_of(hosts_dir: Path, host: str) -> int:
    proc = "orchestrator" if host in MASTERS else "worker"
    path = hosts_dir / host / "run" / f"{proc}.pid"
    return int(path.read_text()) if path.exists() else 0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"orchestrator" in f.read()
    except OSError:
        return False


def _described(pids: list[int]) -> list[str]:
    """What is left, readable in a failure: pid, state, parent and command line."""
    out = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # gone meanwhile
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        out.append(f"{pid} {fields.get('State', '?')} ppid {fields.get('PPid', '?')}: {cmd[:200]}")
    return out


async def nothing_of_ours_left(hosts_dir: Path, timeout: float = 15) -> None:
    """No process of these playbooks runs any more. The processes their pid files name are
    checked dead at once by the callers; this also covers anything else that carries their
    environment, given a moment to finish exiting (once, in CI, five were still listed right
    after stop.yml; which ones was not recorded, hence the description)."""

    async def none_left() -> bool:
        return not _described(ours(hosts_dir))

    try:
        await eventually(none_left, timeout, "the playbooks' processes to be gone", every=0.2)
    except AssertionError:
        raise AssertionError(
            f"still running after stop.yml: {_described(ours(hosts_dir))}"
        ) from None


def ours(hosts_dir: Path) -> list[int]:
    """Every live process started by these playbooks (marked in its environment)."""
    return [p.pid for p in procs.processes()
            if procs.environ_of(p.pid).get(procs.LOCAL_DIR_ENV) == str(hosts_dir)]  # fmt: skip


async def post(http: aiohttp.ClientSession, url: str, command: str, body: dict[str, Any]) -> Any:
    async with http.post(f"{url}/api/v1/commands/{command}", json=body) as r:
        doc = await r.json()
        assert r.status == 200, doc
        return doc


class StallMeter:
    """Polls the task's checkpoint rows on the target: per source, the longest time its
    checkpoint GTID stood still (while the writers write, it moves constantly); and the target's
    lag behind each writer (`ShardWriter.lag_s`), sampled at each poll while active."""

    def __init__(self, mc: MigrationCluster, writers: list[ShardWriter]) -> None:
        self.mc = mc
        self.writers = writers
        self.lags: list[float] = []
        self.last: dict[str, tuple[str, float]] = {}
        self.worst: dict[str, float] = {}
        self.moves: dict[str, int] = {}  # checkpoint changes seen while active
        self.active = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        table = f"`dm_meta`.`{TASK}_syncer_checkpoint`"
        s = None
        while True:
            now = time.monotonic()
            try:
                if s is None:
                    s = await self.mc.target_session()
                rows = await s.fetch_rows(f"SELECT source_id, gtid FROM {table}")
                if self.active:
                    for w in self.writers:
                        newest = await s.fetch_rows(
                            f"SELECT MAX(id) FROM {TARGET[0]}.{TARGET[1]} WHERE id >= %s AND "
                            "id < %s", (w.first_id, w.first_id + 5_000_000),
                        )  # fmt: skip
                        self.lags.append(w.lag_s(newest[0][0]))
            except MysqlError:
                if s is not None:
                    await s.close()
                s = None
                rows = []
            for sid, gtid in rows:
                key = sid.decode() if isinstance(sid, bytes) else str(sid)
                prev = self.last.get(key)
                if prev is None or prev[0] != gtid:
                    self.last[key] = (gtid, now)
                    if self.active:
                        self.moves[key] = self.moves.get(key, 0) + 1
                elif self.active:
                    self.worst[key] = max(self.worst.get(key, 0.0), now - prev[1])
            await asyncio.sleep(0.2)


async def test_rolling_update_playbook_replaces_every_process_with_the_task_running(
    mcluster: MigrationCluster, tmp_path: Path
) -> None:
    mc = mcluster
    work = tmp_path / "ansible"
    hosts_dir = tmp_path / "hosts"
    work.mkdir()
    hosts_dir.mkdir()
    ports = {m: free_port() for m in MASTERS}
    (work / "inventory.ini").write_text(inventory(mc, hosts_dir, ports))
    # Marks every process the playbooks start (read back by `ours`), so none outlives the test.
    (work / "vars.json").write_text(json.dumps(
        {"orc_extra_settings": {procs.LOCAL_DIR_ENV: str(hosts_dir)}}))  # fmt: skip
    urls = [f"http://127.0.0.1:{ports[m]}" for m in MASTERS]
    ids = await seed(mc, 500)
    writers = [ShardWriter(mc, "-80", "shard_db_1", "shard_table_1", 5_000_000),
               ShardWriter(mc, "80-", "shard_db_2", "shard_table_1", 15_000_000)]  # fmt: skip
    meter = StallMeter(mc, writers)
    try:
        await playbook(work, "deploy.yml")
        out = await playbook(work, "start.yml")
        for h in (*MASTERS, *WORKERS):
            assert alive(pid_of(hosts_dir, h)), f"{h} is not running after start.yml:\n{out}"
        async with aiohttp.ClientSession() as http:
            await post(http, urls[0], "start-task", {"task": merge_task(mc, TASK)})
            writers[0].start(ids["-80"])
            writers[1].start(ids["80-"])
            meter.start()

            async def syncing() -> bool:
                doc = await post(http, urls[1], "query-status", {"name": TASK})
                subs = [e["subTaskStatus"][0] for e in doc["sources"]]
                return all(s["stage"] == "Running" and s["unit"] == "Sync" for s in subs)

            await eventually(syncing, 60, "both subtasks syncing", every=0.3)
            await eventually(lambda: _async(len(meter.last) == 2), 10, "checkpoints", every=0.2)
            before = {h: pid_of(hosts_dir, h) for h in (*MASTERS, *WORKERS)}
            leader = None
            for m, url in zip(MASTERS, urls, strict=True):
                async with http.get(f"{url}/readyz") as r:
                    if (await r.json()).get("is_leader"):
                        leader = m
            assert leader is not None
            meter.active = True
            t0 = time.monotonic()
            out = await playbook(work, "rolling_update.yml")
            took = time.monotonic() - t0
            meter.active = False
            after = {h: pid_of(hosts_dir, h) for h in (*MASTERS, *WORKERS)}
            lags = sorted(meter.lags)
            print(f"rolling update: {took:.1f}s; longest checkpoint stall per source: "
                  f"{meter.worst}; checkpoint moves seen: {meter.moves}; target lag over "
                  f"{len(lags)} samples: p50 {lags[len(lags) // 2]:.2f}s, p99 "
                  f"{lags[int(len(lags) * 0.99)]:.2f}s, max {lags[-1]:.2f}s",
                  file=sys.stderr)  # fmt: skip
            for h in (*MASTERS, *WORKERS):
                assert after[h] != before[h] and alive(after[h]), (h, before[h], after[h])
                assert not alive(before[h]), f"{h}: old pid {before[h]} still runs"
                kind = "master" if h in MASTERS else "worker"
                step = re.search(rf"rolling_update {h} \({kind}\): pid (\d+) -> (\d+)", out)
                assert step, f"no step line for {h} in the playbook's output"
                assert (int(step.group(1)), int(step.group(2))) == (before[h], after[h])
            # One host at a time, workers first, the service leader last.
            order = [m.group(1) for m in re.finditer(r"rolling_update (\S+) \(", out)]
            assert sorted(order[:3]) == sorted(WORKERS) and sorted(order[3:]) == sorted(MASTERS)
            assert order[-1] == leader, f"the leader {leader} was not updated last: {order}"
            assert "leader now http" in out
            assert max(meter.worst.values(), default=0.0) < MAX_STALL_S, meter.worst
            # The meter saw both checkpoints move all along (polled every 0.2 s).
            assert len(meter.moves) == 2 and min(meter.moves.values()) > 20, meter.moves
            doc = await post(http, urls[0], "query-status", {"name": TASK})
            for e in doc["sources"]:
                assert e["subTaskStatus"][0]["stage"] == "Running", e
                assert e["subTaskStatus"][0]["result"] is None, e
            for w in writers:
                await w.stop()
            await wait_target_equals(mc, PARTS, TARGET, timeout=60)
        out = await playbook(work, "stop.yml")
        assert not [h for h in (*MASTERS, *WORKERS) if alive(after[h])], out
        await nothing_of_ours_left(hosts_dir)
        assert not list(hosts_dir.glob("*/run/*.pid"))
    finally:
        await meter.stop()
        for w in writers:
            with contextlib.suppress(Exception):
                await w.stop()
        left = ours(hosts_dir)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await procs.stop_pids(left, 5, kill=True)


async def _async(value: bool) -> bool:
    return value


async def test_scale_out_and_scale_in_playbooks_move_the_subtasks(
    mcluster: MigrationCluster, tmp_path: Path
) -> None:
    """scale_out.yml -l worker3 adds a worker the service lists; scale_in.yml -l worker1 drains
    worker1 (its subtasks run elsewhere before the play ends) and stops it; the rest runs on."""
    mc = mcluster
    work = tmp_path / "ansible"
    hosts_dir = tmp_path / "hosts"
    work.mkdir()
    hosts_dir.mkdir()
    ports = {m: free_port() for m in MASTERS}
    (work / "inventory.ini").write_text(inventory(mc, hosts_dir, ports))
    (work / "vars.json").write_text(
        json.dumps({"orc_extra_settings": {procs.LOCAL_DIR_ENV: str(hosts_dir)}})
    )
    url = f"http://127.0.0.1:{ports['orc1']}"
    await seed(mc, 300)
    try:
        await playbook(work, "deploy.yml", "-l", "orc1,worker1,worker2")
        await playbook(work, "start.yml", "-l", "orc1,worker1,worker2")
        assert not pid_of(hosts_dir, "worker3") and not pid_of(hosts_dir, "orc2")
        async with aiohttp.ClientSession() as http:
            await post(http, url, "start-task", {"task": merge_task(mc, TASK)})
            await wait_target_equals(mc, PARTS, TARGET, timeout=60)

            async def workers() -> dict[str, dict[str, Any]]:
                doc = await post(http, url, "list-member", {"worker": True})
                rows = [r for m in doc["members"] for r in m.get("worker", {}).get("workers", [])]
                return {r["name"]: r for r in rows}

            out = await playbook(work, "scale_out.yml", "-l", "worker3")
            assert "worker3" in out and alive(pid_of(hosts_dir, "worker3"))
            assert (await workers())["worker3"]["stage"] in ("free", "bound")
            had = (await workers())["worker1"]["subtasks"]
            old = pid_of(hosts_dir, "worker1")
            await playbook(work, "scale_in.yml", "-l", "worker1")
            assert not alive(old)
            now = await workers()
            assert "worker1" not in now or now["worker1"]["stage"] == "offline", now
            moved = [s for w in ("worker2", "worker3") for s in now[w]["subtasks"]]
            assert set(had) <= set(moved), (had, now)
            async with await mc.primary_session("-80") as s:
                await insert_rows(s, "shard_db_1", "shard_table_1", [9_000_000])
            await wait_target_equals(mc, PARTS, TARGET, timeout=30)
        await playbook(work, "stop.yml")
        await nothing_of_ours_left(hosts_dir)
    finally:
        left = ours(hosts_dir)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await procs.stop_pids(left, 5, kill=True)
