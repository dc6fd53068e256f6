"""`make status` (`orchestrator local status`) as an on-call person reads it (issue 11 item 9):
etcd, the service and every pid; stopped replication shown as stopped; errors never cut short.
Separate processes, real servers, everything stopped afterwards (the `cluster_dir` fixture)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_local_cluster import cluster_dir, orchestrator, sql, up_json

__all__ = ["cluster_dir"]  # the fixture, used by name below


@pytest.mark.slow
def test_local_status_shows_processes_stopped_replication_and_whole_errors(
    cluster_dir: Path,
) -> None:
    d = str(cluster_dir)
    doc = up_json("--dir", d, "--tablets-per-shard", "3", "--no-service")
    ports = {t["alias"]: t["mysql_port"] for t in doc["tablets"]}
    pids = {t["alias"]: t["mysqld_pid"] for t in doc["tablets"]}
    sql(doc, ports["zone1-102"], "STOP SLAVE")
    r = orchestrator("local", "kill", "--dir", d, "zone1-103")
    assert r.returncode == 0, r.stderr

    st = orchestrator("local", "status", "--dir", d)
    assert st.returncode == 0, st.stderr
    lines = st.stdout.strip().splitlines()
    assert lines[0].split() == ["TABLET", "SHARD", "ROLE", "READ_ONLY", "REPLICATING", "FROM",
                                "POSITION", "LAG", "PID", "REPLICATION"]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[1:]}
    assert re.search(rf"\b{pids['zone1-101']}\s+-$", rows["zone1-101"]), rows["zone1-101"]
    assert re.search(rf"\b{pids['zone1-102']}\s+stopped$", rows["zone1-102"]), rows["zone1-102"]
    down = rows["zone1-103"]
    assert "DOWN: " in down
    error = down.split("DOWN: ", 1)[1]
    assert len(error) > 40 and f"{ports['zone1-103']}" in error, down  # whole, not cut at 40
    # The processes: etcd with its pid, the service (not started here) said to be not running.
    assert re.search(r"^etcd +127\.0\.0\.1:\d+ +pid \d+$", st.stderr, re.M), st.stderr
    assert re.search(r"^service +.*NOT RUNNING$", st.stderr, re.M), st.stderr
