"""Timing figures that the tests used to bound tightly (and which made them flaky on a loaded
machine): how fast a released shard lock is handed over, how closely each deadline is kept
(lock wait, position wait, journal wait, connect and query timeouts), and how fast a refused
connection or an unreachable etcd is reported. The tests still assert the behaviour (a waiter
is woken by the release, a deadline is kept and not overrun by much more than itself, a refused
connection does not wait out a timeout); the precise figures are here.

    .venv/bin/python -m bench.timeouts [--repeat 5] [--json out.json]

Prints one line per figure (p50 / max over the repeats, in ms); never a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import run_main, summary_ms, sweep, write_json
from mysqlctl.client import MysqlClient, MysqlParams
from mysqlctl.errors import MysqlError
from orchestrator.local.etcd import start_etcd
from orchestrator.local.mariadb import start_mariadb
from orchestrator.logs import configure_logging
from topo.errors import LockTimeoutError, TopoError
from topo.lock import ShardLock
from topo.records import Keyspace, Shard
from topo.store import TopoStore


async def handover(store: TopoStore) -> float:
    """From the holder's release to the waiter holding the lock (woken by its watch)."""
    first = ShardLock(store, "bench", "0", action="First")
    await first.acquire()
    got: list[float] = []

    async def second() -> None:
        async with ShardLock(store, "bench", "0", action="Second", timeout=10):
            got.append(time.monotonic())

    waiter = asyncio.create_task(second())
    await asyncio.sleep(0.2)  # the waiter is watching by now
    released = time.monotonic()
    await first.release()
    await waiter
    return got[0] - released


async def lock_timeout_overrun(store: TopoStore, timeout: float = 0.5) -> float:
    """How much longer than its timeout a lock wait on a held lock takes to give up."""
    async with ShardLock(store, "bench", "0", action="Holder"):
        started = time.monotonic()
        with contextlib.suppress(LockTimeoutError):
            async with ShardLock(store, "bench", "0", action="Waiter", timeout=timeout):
                pass
        return time.monotonic() - started - timeout


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    started = time.monotonic()
    with contextlib.suppress(MysqlError, TopoError, TimeoutError):
        await fn()
    return time.monotonic() - started


async def main(args: argparse.Namespace) -> None:
    configure_logging(json=False, level="warning")
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory() as d:
        (etcd,) = await start_etcd(Path(d) / "etcd")
        server = await start_mariadb(Path(d) / "mariadb", server_id=1)
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # completes TCP handshakes, never speaks MySQL
        refused = socket.socket()
        refused.bind(("127.0.0.1", 0))  # bound, not listening: connections refused
        try:
            store = TopoStore([etcd.endpoint], root="/bench")
            await store.create_keyspace(Keyspace(name="bench"))
            await store.create_shard(Shard(keyspace="bench", name="0"))
            admin = MysqlClient(
                MysqlParams(server.host, server.port, server.admin_user, server.admin_password,
                            query_timeout=0.5)
            )  # fmt: skip
            silent_port = silent.getsockname()[1]
            refused_port = refused.getsockname()[1]
            dead_etcd = TopoStore([f"127.0.0.1:{refused_port}"], root="/x", op_timeout=1.0)
            for _ in range(args.repeat):
                add("lock handover after release", await handover(store))
                add("lock wait overrun past a 0.5 s timeout", await lock_timeout_overrun(store))
                add("query timeout overrun past 0.5 s (SELECT SLEEP(3))",
                    await timed(lambda: admin.fetch_all("SELECT SLEEP(3)")) - 0.5)  # fmt: skip
                c = MysqlClient(MysqlParams("127.0.0.1", silent_port, "x", "x",
                                            connect_timeout=0.5))  # fmt: skip
                add("connect timeout overrun past 0.5 s (silent listener)",
                    await timed(c.status) - 0.5)  # fmt: skip
                await c.close()
                c = MysqlClient(MysqlParams("127.0.0.1", refused_port, "x", "x"))
                add("refused connection reported", await timed(c.connect))
                await c.close()
                add("unreachable etcd reported (op_timeout 1 s)",
                    await timed(lambda: dead_etcd.get_keyspace("bench")))  # fmt: skip
            await admin.close()
            await dead_etcd.close()
            await store.close()
        finally:
            silent.close()
            refused.close()
            server.kill()
            etcd.kill()
            await sweep(d)
    doc = {name: summary_ms(values) for name, values in figures.items()}
    for name, s in doc.items():
        print(f"{name:<55} p50 {s['p50']:8.1f} ms   max {s['max']:8.1f} ms   (n={s['n']})")
    write_json(args.json, doc)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json")
    run_main(main(p.parse_args()))
