"""A CLI for people (issue 11 items 9-12), through the real `orchestrator ctl` as a subprocess
against a service on real MariaDB servers and etcd: tables on a terminal, JSON in a pipe;
typos refused before anything is locked or recorded; lock waits that say who holds the lock
and stop at --lock-timeout or the client's deadline (a command whose client gave up never runs
later); reads and commands agreeing on authentication; and how fast ctl starts.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import statistics
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.fixtures_cluster import ShardFactory
from tests.fixtures_service import ServiceFactory
from tests.helpers.health import start_service, wait_for
from tests.service.test_ctl import ctl
from topo.lock import ShardLock
from topo.records import WorkflowStatus

pytestmark = pytest.mark.slow

ISO = re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b")


def _on_a_terminal(url: str, *args: str) -> tuple[int, str]:
    """`orchestrator ctl` with its stdout on a pseudo-terminal (as a person runs it)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ctl", "--server", url, *args],
        stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode().replace("\r\n", "\n")


async def test_reads_are_tables_on_a_terminal_and_json_in_a_pipe(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    url = rs.url
    r = await ctl(url, "StopReplication", "zone1-103")
    assert r.code == 0, r.stderr
    await wait_for(
        lambda: any(p["kind"] == "ReplicationStoppedByOperator"
                    for p in rs.service.health.problems()["commerce/0"]), 5, "the report",
    )  # fmt: skip

    code, out = await asyncio.to_thread(_on_a_terminal, url, "GetTablets")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0].split() == ["ALIAS", "SHARD", "TYPE", "HOST:PORT", "STATE", "READ-ONLY",
                                "SOURCE", "IO/SQL", "LAG", "GTID", "PROBLEMS"]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {"zone1-101", "zone1-102", "zone1-103"}
    p = shard.server("zone1-101")
    assert f"{p.host}:{p.port}" in rows["zone1-101"] and " primary " in rows["zone1-101"]
    assert re.search(r"replica .* up +yes +zone1-101 +Yes/Yes +0 ", rows["zone1-102"]), rows
    # Stopped replication shows as stopped, with the reason in full.
    assert re.search(r" zone1-101 +stopped ", rows["zone1-103"]), rows["zone1-103"]
    assert "ReplicationStoppedByOperator: IO and SQL thread stopped by StopReplication; " \
        "StartReplication restarts it" in rows["zone1-103"]  # fmt: skip

    # In a pipe (scripts), the same command prints JSON.
    r = await ctl(url, "GetTablets", "--keyspace", "commerce", "--shard", "0")
    assert r.code == 0, r.stderr
    by_alias = {t["alias"]: t for t in r.json["tablets"]}
    assert by_alias["zone1-102"]["source"] == "zone1-101"
    assert by_alias["zone1-103"]["io_running"] is False

    for args, header in (
        (["GetKeyspaces"], ["KEYSPACE", "DURABILITY", "AUTO-RECOVERY", "SHARDS"]),
        (["FindAllShardsInKeyspace", "commerce"], ["SHARD", "PRIMARY", "SERVING", "PRIMARY",
                                                   "SINCE"]),
        (["GetRecoveries"], ["SHARD", "PAUSED", "PROBLEMS", "LAST", "FAILOVER", "FAILOVER",
                             "BLOCKED", "FOR"]),
        (["GetWorkflows"], ["ID", "ACTION", "SHARD", "STATUS", "CREATED", "UPDATED", "ERROR"]),
    ):  # fmt: skip
        r = await ctl(url, *args, "--format", "table")
        assert r.code == 0, r.stderr
        assert r.stdout.splitlines()[0].split() == header, r.stdout
    r = await ctl(url, "GetKeyspaces", "--format", "table")
    assert re.search(r"^commerce +none +on +0$", r.stdout, re.M), r.stdout
    r = await ctl(url, "FindAllShardsInKeyspace", "commerce", "--format", "table")
    assert re.search(r"^commerce/0 +zone1-101 +yes +", r.stdout, re.M) and ISO.search(r.stdout)
    r = await ctl(url, "GetWorkflows", "--format", "table")
    assert "InitShardPrimary" in r.stdout and ISO.search(r.stdout), r.stdout

    async with ShardLock(shard.store, "commerce", "0", action="HoldForTest", reason="drill"):
        r = await ctl(url, "ShowLocks", "--format", "table")
    assert r.stdout.splitlines()[0].split() == ["SHARD", "ACTION", "HOLDER", "WORKFLOW", "SINCE",
                                               "AGE", "REASON"]  # fmt: skip
    assert re.search(r"^commerce/0 +HoldForTest +HoldForTest by .* drill$", r.stdout, re.M)
    assert ISO.search(r.stdout)
    r = await ctl(url, "ShowLocks", "--format", "table")
    assert r.stdout.strip() == "no shard lock is held"


async def test_a_tablet_of_another_shard_is_refused_before_any_lock_or_record(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    before = len(await shard.store.list_workflows())
    for args in (
        ["PlannedReparentShard", "commerce/0", "--new-primary", "zone1-999"],
        ["PlannedReparentShard", "commerce/0", "--avoid-primary", "zone1-999"],
        ["EmergencyReparentShard", "commerce/0", "--new-primary", "zone1-999"],
        ["EmergencyReparentShard", "commerce/0", "--ignore-replicas", "zone1-102,zone1-999"],
    ):
        r = await ctl(rs.url, *args)
        assert r.code == 1, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert lines[0] == (
            "error: INVALID_ARGUMENT: zone1-999 is not a tablet of shard commerce/0 (its "
            "tablets: zone1-101, zone1-102, zone1-103)"
        ), r.stderr
        assert "Traceback" not in r.stderr
    assert len(await shard.store.list_workflows()) == before  # no workflow record
    assert await shard.store.list_locks() == []
    assert await shard.primary_alias() == "zone1-101"


async def test_lock_waits_are_visible_bounded_and_never_outlive_the_client(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    # A long lock timeout on the service: only the command's own bounds stop the waits.
    rs = await start_service(shard, service_factory, lock_timeout_s=60)
    url = rs.url
    holder = ShardLock(shard.store, "commerce", "0", action="HoldForTest", reason="drill")
    await holder.acquire()
    try:
        started = time.monotonic()
        r = await ctl(url, "PlannedReparentShard", "commerce/0", "--new-primary", "zone1-102",
                      "--lock-timeout", "2s")  # fmt: skip
        took = time.monotonic() - started
        assert r.code == 1, r.stderr
        assert re.search(
            r"waiting for the shard lock held by HoldForTest by \S+ \(pid \d+ on "
            r".+\) \(HoldForTest, \d+s\); giving up in \d+s",
            r.stderr,
        ), r.stderr
        (err,) = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
        assert err.startswith("error: LOCK_HELD: "), err
        assert "--lock-timeout" in r.stderr  # the hint
        assert 2 <= took < 6, took

        # The client gives up after 2 s (--timeout) while the lock is still held...
        started = time.monotonic()
        r = await ctl(url, "--timeout", "2s", "PlannedReparentShard", "commerce/0",
                      "--new-primary", "zone1-102")  # fmt: skip
        took = time.monotonic() - started
        assert r.code != 0 and took < 6, (took, r.stderr)
    finally:
        await holder.release()
    # ... and the lock is free now: the PRS it asked for never starts later.
    await asyncio.sleep(4)
    assert await shard.primary_alias() == "zone1-101"
    prs = [w for w in await shard.store.list_workflows() if w.action == "PlannedReparentShard"]
    assert len(prs) == 2 and all(w.status == WorkflowStatus.FAILED for w in prs), prs
    assert all(len([s for s in w.steps if s.name == "read_shard"]) == 0 for w in prs)
    # With the lock free and time enough, the same command works.
    r = await ctl(url, "--timeout", "30s", "PlannedReparentShard", "commerce/0",
                  "--new-primary", "zone1-102", "--lock-timeout", "5s")  # fmt: skip
    assert r.code == 0, r.stderr
    assert await shard.primary_alias() == "zone1-102"


async def test_read_commands_and_get_routes_agree_on_authentication(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=2)
    rs = await service_factory(shard, api_token="tok-1")
    async with aiohttp.ClientSession() as http:
        for path in ("/api/v1/locks", "/api/v1/tablets", "/api/v1/keyspaces/commerce/shards/0"):
            async with http.get(f"{rs.url}{path}") as resp:
                assert resp.status == 200, path
    for args in (["ShowLocks"], ["GetTablets"], ["GetShard", "commerce/0"],
                 ["GetKeyspaces"], ["GetRecoveries"], ["GetWorkflows"]):  # fmt: skip
        r = await ctl(rs.url, *args)
        assert r.code == 0, (args, r.stderr)
    r = await ctl(rs.url, "PlannedReparentShard", "commerce/0", "--new-primary", "zone1-102")
    assert r.code == 1 and "error: UNAUTHENTICATED" in r.stderr
    r = await ctl(rs.url, "SetRecoveries", "--disable")
    assert r.code == 1 and "error: UNAUTHENTICATED" in r.stderr
    assert await shard.primary_alias() == "zone1-101"


async def test_ctl_starts_in_under_150_ms(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=1)
    rs = await service_factory(shard)
    exe = os.path.join(os.path.dirname(sys.executable), "orchestrator")
    times = []
    for _ in range(9):
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            exe, "ctl", "--server", rs.url, "GetShard", "commerce/0",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        assert await proc.wait() == 0
        times.append(time.monotonic() - started)
    best, median = min(times), statistics.median(times)
    print(f"\nctl GetShard, whole process against a live service: best {best * 1000:.0f} ms, "
          f"median {median * 1000:.0f} ms over {len(times)} runs")  # fmt: skip
    assert best < 0.150, times
