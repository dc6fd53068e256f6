"""`orchestrator local up|status|down` as a user runs them: separate processes, a JSON contract
on stdout, and nothing left behind."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
