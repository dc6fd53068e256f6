"""A client-like writer for benchmarks: follows the serving graph with an etcd watch (no
polling), inserts numbered rows into the current primary with the application user, and
records every acknowledged id with its time and latency."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass, field

from mysqlctl.client import MysqlClient, MysqlParams
from topo.records import SrvKeyspace
from topo.store import TopoStore


@dataclass(frozen=True)
class Ack:
    id: int
    sent: float  # time.monotonic() when the INSERT was sent
    acked: float  # ... when the server acknowledged it
    primary: str


@dataclass
class BenchWriter:
    store: TopoStore
    cell: str
    keyspace: str
    shard: str
    user: str
    password: str
    acks: list[Ack] = field(default_factory=list)
    errors: int = 0
    _primary: tuple[str, str, int] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._write())]

    async def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        for t in self._tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _follow(self) -> None:
        async for graph in self.store.watch_srv_keyspace(self.cell, self.keyspace):
            self._primary = _serving_primary(graph, self.shard)
            self._changed.set()

    async def _write(self) -> None:
        next_id = 1
        client: MysqlClient | None = None
        current: tuple[str, str, int] | None = None
        while not self._stop.is_set():
            if self._primary != current:
                if client is not None:
                    await client.close()
                current = self._primary
                client = None
                if current is not None:
                    _, host, port = current
                    client = MysqlClient(MysqlParams(host, port, self.user, self.password,
                                                     connect_timeout=0.5, query_timeout=2.0))  # fmt: skip
            if client is None or current is None:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)
                continue
            sent = time.monotonic()
            try:
                await client.execute(
                    "INSERT INTO bench.acked (id, t) VALUES (%s, %s)", (next_id, time.time())
                )
                self.acks.append(Ack(next_id, sent, time.monotonic(), current[0]))
            except Exception:
                self.errors += 1
                await asyncio.sleep(0.002)
            next_id += 1  # a failed id may or may not exist; never reused
        if client is not None:
            await client.close()

    def gap_around(self, start: float, end: float) -> float:
        """The longest time without an acknowledgement that overlaps [start, end] (seconds)."""
        times = [a.acked for a in self.acks]
        before = [t for t in times if t < start]
        after = [t for t in times if t > end]
        inside = [t for t in times if start <= t <= end]
        points = ([before[-1]] if before else []) + inside + ([after[0]] if after else [])
        return max((b - a for a, b in itertools.pairwise(points)), default=0.0)

    def first_ack_after(self, t: float, *, not_on: str | None = None) -> Ack | None:
        return next((a for a in self.acks if a.acked > t and a.primary != not_on), None)


def _serving_primary(graph: SrvKeyspace | None, shard: str) -> tuple[str, str, int] | None:
    if graph is None:
        return None
    s = graph.shard(shard)
    if s is None or s.primary is None or not s.primary_serving:
        return None
    return (s.primary.alias, s.primary.host, s.primary.port)
