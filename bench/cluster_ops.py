"""Cluster operations benchmark (issue 10), the leader part: how long the service has no leader
when the leading `orchestrator serve` is stopped with SIGTERM (it resigns its election key:
goal < 1 s) and with SIGKILL (its lease expires: the election TTL, plus the follower's
campaign), on a real etcd on loopback and real processes (no MySQL servers: the election does
not need them).

Per run: two instances; the leader is signalled; measured from the signal to the moment the
election key names the other instance (polled every 5 ms); the signalled one is started again
as the next run's follower. The drained worker's handover under a running task is measured by
the tests (`tests/migration/test_cluster_ops.py` prints it).

    .venv/bin/python -m bench.cluster_ops [--runs N] [--ttl S] [--json out.json]

Prints figures, never pass/fail. Every process it starts is stopped however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import run_main, summary_ms, write_json
from orchestrator.local.etcd import start_etcd
from topo.kv import EtcdKV

ROOT = "/bench-cluster-ops"


def _serve(endpoint: str, name: str, ttl: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORC_")}
    env.update({"ORC_ELECTION_TTL_S": str(ttl), "ORC_WORKER_ENABLED": "false",
                "ORC_LOG_JSON": "true", "ORC_MYSQL_USER": "bench", "ORC_MYSQL_PASSWORD": "bench"})  # fmt: skip
    args = [sys.executable, "-m", "orchestrator", "serve", "--etcd", endpoint, "--root", ROOT,
            "--listen", "127.0.0.1:0", "--instance-id", name]  # fmt: skip
    with open(log, "ab") as f:
        return subprocess.Popen(args, stdout=f, stderr=f, stdin=subprocess.DEVNULL, env=env)


async def _leader(kv: EtcdKV) -> str | None:
    got = await kv.get(f"{ROOT}/global/election")
    if got is None:
        return None
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(got.value).get("instance_id"))
    return None


async def _until_leader(kv: EtcdKV, name: str, timeout: float) -> float:
    """Seconds until `name` holds the election key."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await _leader(kv) == name:
            return time.monotonic() - started
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{name} did not lead within {timeout}s")


async def handovers(
    endpoint: str, kv: EtcdKV, d: Path, sig: int, runs: int, ttl: int
) -> list[float]:
    procs = {n: _serve(endpoint, n, ttl, d / f"{n}.log") for n in ("orc-a", "orc-b")}
    out: list[float] = []
    try:
        leader = await _leader_of(kv, set(procs), ttl + 20)
        for _ in range(runs):
            other = next(n for n in procs if n != leader)
            await asyncio.sleep(1.0)  # the follower is up and watching
            procs[leader].send_signal(sig)
            out.append(await _until_leader(kv, other, ttl + 10))
            await asyncio.to_thread(procs[leader].wait)
            procs[leader] = _serve(endpoint, leader, ttl, d / f"{leader}.log")
            leader = other
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    return out


async def _leader_of(kv: EtcdKV, names: set[str], timeout: float) -> str:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        name = await _leader(kv)
        if name in names:
            assert name is not None
            return name
        await asyncio.sleep(0.05)
    raise TimeoutError("no instance leads")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (etcd,) = await start_etcd(d)
        kv = EtcdKV([etcd.endpoint])
        try:
            term = await handovers(etcd.endpoint, kv, d, signal.SIGTERM, args.runs, args.ttl)
            kill = await handovers(etcd.endpoint, kv, d, signal.SIGKILL, args.kill_runs, args.ttl)
        finally:
            with contextlib.suppress(Exception):
                await kv.close()
            etcd.kill()
    doc = {"election_ttl_s": args.ttl, "sigterm_handover_ms": summary_ms(term),
           "sigkill_handover_ms": summary_ms(kill)}  # fmt: skip
    for what, s in (
        ("SIGTERM", doc["sigterm_handover_ms"]),
        ("SIGKILL", doc["sigkill_handover_ms"]),
    ):
        print(f"leader handover on {what} (election TTL {args.ttl} s): p50 {s['p50']:.0f} ms  "
              f"max {s['max']:.0f} ms  (n={s['n']})")  # fmt: skip
    write_json(args.json, doc)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=5, help="SIGTERM handovers (default 5)")
    p.add_argument("--kill-runs", type=int, default=2, help="SIGKILL handovers (default 2)")
    p.add_argument("--ttl", type=int, default=5, help="election TTL in seconds (default 5)")
    p.add_argument("--json", help="write the figures to this file")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main(parse_args()))
