"""`orchestrator local up|status|down` as a user runs them: separate processes, a JSON contract
on stdout, and nothing left behind."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from orchestrator.local import procs
from orchestrator.local.etcd import pid_alive

REPO = Path(__file__).resolve().parent.parent


def orchestrator(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_local_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    d = tmp_path / "cluster"
    up = orchestrator("local", "up", "--dir", str(d), "--shards", "2", "--tablets-per-shard",
                      "2", "--cells", "zone1,zone2", "--no-service")  # fmt: skip
    assert up.returncode == 0, up.stderr
    doc = json.loads(up.stdout)
    assert set(doc) >= {"dir", "etcd_endpoints", "api_url", "keyspace", "shards", "mysql_user",
                        "mysql_password", "tablets"}  # fmt: skip
    assert doc["api_url"] is None and doc["keyspace"] == "commerce"
    assert [s["name"] for s in doc["shards"]] == ["-80", "80-"]
    assert [s["primary"] for s in doc["shards"]] == ["zone1-101", "zone1-201"]
    aliases = [t["alias"] for t in doc["tablets"]]
    assert aliases == ["zone1-101", "zone2-102", "zone1-201", "zone2-202"]
    assert [t["type"] for t in doc["tablets"]] == ["primary", "replica", "primary", "replica"]
    pids = [t["mysqld_pid"] for t in doc["tablets"]]
    ports = [t["mysql_port"] for t in doc["tablets"]]
    ports += [int(e.rsplit(":", 1)[1]) for e in doc["etcd_endpoints"]]
    assert all(pid_alive(p) for p in pids) and all(port_in_use(p) for p in ports)

    st = orchestrator("local", "status", "--dir", str(d))
    assert st.returncode == 0, st.stderr
    lines = st.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["TABLET", "SHARD", "ROLE"]
    assert len(lines) == 5 and "MariaDB/" in st.stdout
    st_json = orchestrator("local", "status", "--dir", str(d), "--json")
    assert json.loads(st_json.stdout)["tablets"] == doc["tablets"]

    again = orchestrator("local", "up", "--dir", str(d), "--no-service")
    assert again.returncode != 0 and "already" in again.stderr

    down = orchestrator("local", "down", "--dir", str(d))
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p) for p in pids)
    assert not any(port_in_use(p) for p in ports)
    assert orchestrator("local", "status", "--dir", str(d)).returncode != 0


def test_local_up_rejects_bad_options(tmp_path: Path) -> None:
    r = orchestrator("local", "up", "--dir", str(tmp_path / "x"), "--shards", "3", "--no-service")
    assert r.returncode != 0 and "divide 256" in r.stderr
    r = orchestrator(
        "local", "up", "--dir", str(tmp_path / "y"), "--cells", "Bad Cell", "--no-service"
    )
    assert r.returncode != 0 and "cell" in r.stderr


# -- day-2: drills, stop/start again, purge, what runs now ---------------------------------------


@pytest.fixture
def cluster_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for one local cluster; whatever the test did, everything started in it is
    stopped afterwards (`local down`, then any mariadbd/etcd/service still using it)."""
    d = tmp_path / "cluster"
    try:
        yield d
    finally:
        if d.exists():
            orchestrator("local", "down", "--dir", str(d))
        asyncio.run(_sweep(tmp_path))


async def _sweep(directory: Path) -> None:
    left = [p for p in procs.using_dir(directory) if p.name in ("mariadbd", "etcd")
            or procs.LOCAL_DIR_ENV in procs.environ_of(p.pid)]  # fmt: skip
    await procs.stop_pids([p.pid for p in left], 5, kill=True)


def servers_using(directory: Path) -> list[procs.Proc]:
    return [p for p in procs.using_dir(directory) if p.name in ("mariadbd", "etcd")
            or procs.LOCAL_DIR_ENV in procs.environ_of(p.pid)]  # fmt: skip


def sql(doc: dict[str, Any], port: int, query: str) -> list[tuple[Any, ...]]:
    conn = pymysql.connect(host="127.0.0.1", port=port, user=doc["mysql_user"],
                           password=doc["mysql_password"], autocommit=True, connect_timeout=5)  # fmt: skip
    try:
        with conn.cursor() as c:
            c.execute(query)
            return list(c.fetchall())
    finally:
        conn.close()


def wait_until(check: Any, timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {check}")
        time.sleep(0.1)


def up_json(*args: str) -> dict[str, Any]:
    r = orchestrator("local", "up", *args)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


@pytest.mark.slow
def test_local_down_stops_a_server_restarted_behind_its_back(cluster_dir: Path) -> None:
    """A server restarted by someone else has another pid than the one `up` recorded; `down`
    finds it from its pid file / command line, and reports only what it really stopped."""
    doc = up_json("--dir", str(cluster_dir), "--tablets-per-shard", "2", "--no-service")
    replica = doc["tablets"][1]
    old_pid = replica["mysqld_pid"]
    os.kill(old_pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(old_pid))
    # Restarted by hand (as an operator or another tool would), in its own session.
    cnf = cluster_dir / replica["alias"] / "my.cnf"
    mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
    subprocess.Popen([mariadbd, f"--defaults-file={cnf}"], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_until(lambda: sql(doc, replica["mysql_port"], "SELECT 1"))
    (new,) = [p for p in procs.with_arg(f"--defaults-file={cnf}")]
    assert new.pid != old_pid

    down = orchestrator("local", "down", "--dir", str(cluster_dir))
    assert down.returncode == 0, down.stderr
    assert f"pid {old_pid}" not in down.stderr  # no claim to have stopped a dead pid
    assert f"{replica['alias']} mariadbd (pid {new.pid})" in down.stderr
    assert not pid_alive(new.pid) and not port_in_use(replica["mysql_port"])
    assert servers_using(cluster_dir) == []


@pytest.mark.slow
def test_local_stop_kill_restart_one_tablet_and_the_service(cluster_dir: Path) -> None:
    doc = up_json("--dir", str(cluster_dir), "--tablets-per-shard", "2")
    d = str(cluster_dir)
    replica = doc["tablets"][1]
    alias, port = replica["alias"], replica["mysql_port"]

    r = orchestrator("local", "kill", "--dir", d, alias)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["action"] == "kill"
    assert not pid_alive(replica["mysqld_pid"]) and not port_in_use(port)

    r = orchestrator("local", "restart", "--dir", d, alias)
    assert r.returncode == 0, r.stderr
    pid = json.loads(r.stdout)["pid"]
    assert pid_alive(pid) and pid != replica["mysqld_pid"]
    # Back read-only (every restart is), and the service's health checks restart its replication.
    assert sql(doc, port, "SELECT @@read_only") == [(1,)]
    wait_until(lambda: slave_status(doc, port).get("Slave_SQL_Running") == "Yes")

    r = orchestrator("local", "stop", "--dir", d, alias)
    assert r.returncode == 0 and not pid_alive(pid) and not port_in_use(port)
    r = orchestrator("local", "stop", "--dir", d, alias)
    assert r.returncode == 0 and "was not running" in r.stderr

    r = orchestrator("local", "kill", "--dir", d, "--service")
    assert r.returncode == 0, r.stderr
    assert not port_in_use(int(doc["api_url"].rsplit(":", 1)[1]))
    r = orchestrator("local", "restart", "--dir", d, "--service")
    assert r.returncode == 0, r.stderr
    with urllib.request.urlopen(doc["api_url"] + "/readyz", timeout=5) as resp:  # same URL
        assert resp.status == 200

    r = orchestrator("local", "restart", "--dir", d, "zone9-999")
    assert r.returncode == 1 and "zone1-101" in r.stderr and "Traceback" not in r.stderr
    r = orchestrator("local", "kill", "--dir", d)
    assert r.returncode == 2 and "exactly one" in r.stderr

    down = orchestrator("local", "down", "--dir", d)
    assert down.returncode == 0, down.stderr
    assert "orchestrator service" in down.stderr
    assert servers_using(cluster_dir) == []


def slave_status(doc: dict[str, Any], port: int) -> dict[str, Any]:
    conn = pymysql.connect(host="127.0.0.1", port=port, user=doc["mysql_user"],
                           password=doc["mysql_password"], connect_timeout=5,
                           cursorclass=pymysql.cursors.DictCursor)  # fmt: skip
    try:
        with conn.cursor() as c:
            c.execute("SHOW SLAVE STATUS")
            return dict(c.fetchone() or {})
    finally:
        conn.close()


@pytest.mark.slow
def test_local_down_then_up_starts_the_same_cluster_again_and_purge_after_down(
    cluster_dir: Path,
) -> None:
    """`make stop` then `make run`: the second `up` starts the stopped cluster again from its
    data (same ports, same rows, a writable primary and replicating replicas)."""
    d = str(cluster_dir)
    doc = up_json("--dir", d, "--tablets-per-shard", "2", "--no-service")
    primary, replica = doc["tablets"][0], doc["tablets"][1]
    sql(doc, primary["mysql_port"], "CREATE DATABASE kept")
    sql(doc, primary["mysql_port"], "CREATE TABLE kept.t (id INT PRIMARY KEY)")
    sql(doc, primary["mysql_port"], "INSERT INTO kept.t VALUES (1), (2)")
    assert orchestrator("local", "down", "--dir", d).returncode == 0
    assert servers_using(cluster_dir) == []
    st = orchestrator("local", "status", "--dir", d)
    assert st.returncode == 1 and "stopped" in st.stderr

    again = orchestrator("local", "up", "--dir", d, "--tablets-per-shard", "2", "--no-service",
                         "--demo")  # fmt: skip
    assert again.returncode == 0, again.stderr
    doc2 = json.loads(again.stdout)
    assert [t["mysql_port"] for t in doc2["tablets"]] == [primary["mysql_port"],
                                                         replica["mysql_port"]]  # fmt: skip
    assert [s["primary"] for s in doc2["shards"]] == [primary["alias"]]  # the demo moved it back
    assert sql(doc, primary["mysql_port"], "SELECT @@read_only") == [(0,)]
    sql(doc, primary["mysql_port"], "INSERT INTO kept.t VALUES (3)")
    wait_until(lambda: sql(doc, replica["mysql_port"], "SELECT COUNT(*) FROM kept.t") == [(3,)])

    other = orchestrator("local", "up", "--dir", d, "--tablets-per-shard", "3", "--no-service")
    assert other.returncode == 1 and "already" in other.stderr  # running: refused

    assert orchestrator("local", "down", "--dir", d).returncode == 0
    other = orchestrator("local", "up", "--dir", d, "--tablets-per-shard", "3", "--no-service")
    assert other.returncode == 1 and "other options" in other.stderr
    twice = orchestrator("local", "down", "--dir", d)
    assert twice.returncode == 0 and "nothing was running" in twice.stderr
    purge = orchestrator("local", "down", "--dir", d, "--purge")
    assert purge.returncode == 0, purge.stderr
    assert not cluster_dir.exists()
    assert orchestrator("local", "down", "--dir", d, "--purge").returncode == 0


@pytest.mark.slow
def test_local_up_target_starts_a_writable_server_outside_the_topology(cluster_dir: Path) -> None:
    d = str(cluster_dir)
    doc = up_json("--dir", d, "--tablets-per-shard", "1", "--no-service", "--target")
    target = doc["target"]
    assert set(target) == {"mysql_host", "mysql_port"} and target["mysql_host"] == "127.0.0.1"
    port = target["mysql_port"]
    assert port not in [t["mysql_port"] for t in doc["tablets"]]
    assert [t["alias"] for t in doc["tablets"]] == ["zone1-101"]  # not a tablet
    # Same credentials as the tablets, writable, replicating from nobody.
    assert sql(doc, port, "SELECT @@read_only, @@server_id") == [(0, 9000)]
    assert sql(doc, port, "SHOW SLAVE STATUS") == []
    sql(doc, port, "CREATE DATABASE downstream")
    st = orchestrator("local", "status", "--dir", d, "--json")
    assert json.loads(st.stdout)["target"] == target
    saved = json.loads((cluster_dir / "cluster.json").read_text())
    assert saved["spec"]["target"] is True and saved["target"]["port"] == port

    r = orchestrator("local", "restart", "--dir", d, "--target")
    assert r.returncode == 0, r.stderr
    assert sql(doc, port, "SHOW DATABASES LIKE 'downstream'") == [("downstream",)]
    assert orchestrator("local", "down", "--dir", d).returncode == 0
    assert not port_in_use(port) and servers_using(cluster_dir) == []


def test_local_up_without_target_has_none(tmp_path: Path) -> None:
    from orchestrator.local.cluster import ClusterSpec, ClusterState

    assert ClusterSpec().target is False
    state = ClusterState(dir=tmp_path, spec=ClusterSpec())
    assert state.target is None and state.servers() == []


@pytest.mark.slow
def test_benchmark_leaves_no_server_behind(tmp_path: Path) -> None:
    """bench.reparent restarts killed primaries itself; none of them may outlive it, whether it
    finishes or is terminated."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    args = [sys.executable, "-m", "bench.reparent", "--prs", "1", "--ers", "1", "--tablets", "2",
            "--durability", "none", "--no-service"]  # fmt: skip
    try:
        done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=180)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ERS 1/1" in done.stdout
        assert servers_using(tmp_path) == []

        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            wait_until(lambda: len([p for p in servers_using(tmp_path)
                                    if p.name == "mariadbd"]) >= 3, timeout=60)  # fmt: skip
            # Not a wait for a condition: any moment of the run will do, once its servers are
            # up; half a second lands it in the middle of its first reparents.
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert servers_using(tmp_path) == []
    finally:
        asyncio.run(_sweep(tmp_path))
