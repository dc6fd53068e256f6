"""A split-brain watcher for fault tests: from the fault until convergence it samples, about every
50 ms, every tablet's `read_only` (admin connection) and tries one application write on it (the
application user, fenced by `read_only`), and fails the test if two tablets ever accepted writes
at the same time.

    async with SplitBrainWatcher(shard) as watch:
        ...fault, recovery, convergence...
    # leaving the block without an error asserts that no overlap was seen (watch.summary())

How an overlap is proven from samples. Each sample of a tablet is an interval [sent, answered]
during which the tablet was writable (read_only = 0, or the application INSERT was taken; it is
rolled back, so that the watcher never adds a transaction to a tablet that must not have one)
or not. Two consecutive writable samples of one tablet, with no other sample between them, are
taken to mean that it stayed writable from the first answer to the second send (a tablet that
is fenced and unfenced again within one 50 ms sampling period would escape this). A writable
sample of another tablet lying wholly inside such a span is a split brain: both accepted writes
at once. A planned switch (old primary fenced, then the elect promoted, within milliseconds)
never produces this, however the samples fall; two writable primaries for longer than about two
sampling periods always do. An unreachable tablet (dead, cut off) yields a sample that is not writable and ends its
current span; so does a sample answered too slowly (over `MAX_GAP_S` between two samples).

`params` can redirect the watcher's connections (e.g. the partition tests reach the primary in
its network namespace through a path of their own); `commit_on` names tablets for which only an
acknowledged commit counts (a semi-sync primary cut off from everyone is read_only = 0 until it
is fenced, yet acknowledges nothing).

The watcher samples at about 20 Hz: two writable tablets for less than one period (a few ms, say)
may escape it; the workflow tests check the instant of promotion itself for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from mysqlctl.client import MysqlClient, MysqlParams
from mysqlctl.errors import MysqlError
from tests.fixtures_cluster import Shard

PERIOD_S = 0.05
PROBE_TABLE = "test.split_brain_probe"
# Two writable samples further apart than this are not taken as one writable span.
MAX_GAP_S = 0.25


async def _insert_rolled_back(app: MysqlClient, row_id: int, alias: str) -> None:
    """One application INSERT inside a transaction that is rolled back, on one connection (a
    reconnect between the statements could otherwise commit it)."""

    async def work(conn: Any, flavor: Any) -> None:
        async with conn.cursor() as cursor:
            await cursor.execute("START TRANSACTION")
            try:
                await cursor.execute(
                    f"INSERT INTO {PROBE_TABLE} (id, alias, t) VALUES (%s, %s, %s)",
                    (row_id, alias, time.time()),
                )
            finally:
                await cursor.execute("ROLLBACK")

    await app._run(work, timeout=None, retry=False)


@dataclass(frozen=True)
class Sample:
    alias: str
    sent: float  # monotonic
    answered: float
    writable: bool
    how: str  # "read_only=0", "app write accepted", "read_only=1", "unreachable"


@dataclass
class _Span:
    alias: str
    start: float  # the first writable sample's answer
    end: float  # the next writable sample's send


@dataclass
class SplitBrainWatcher:
    shard: Shard
    params: Callable[[str, bool], MysqlParams] | None = None  # (alias, app) -> params
    # Tablets for which only an acknowledged commit counts as taking writes: a semi-sync
    # primary cut off from everyone keeps read_only = 0 but can acknowledge nothing. Their probe
    # INSERT is committed (it never replicates anywhere if the fence holds).
    commit_on: frozenset[str] = frozenset()
    period_s: float = PERIOD_S
    samples: list[Sample] = field(default_factory=list)
    unreachable: dict[str, int] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(
        default_factory=lambda: itertools.count(random.randrange(10**15, 2 * 10**15))
    )

    def _params(self, alias: str, app: bool) -> MysqlParams:
        if self.params is not None:
            p = self.params(alias, app)
        elif app:
            p = self.shard.app_params(alias)
        else:
            srv = self.shard.server(alias)
            p = MysqlParams(srv.host, srv.port, srv.admin_user, srv.admin_password)
        return MysqlParams(p.host, p.port, p.user, p.password, connect_timeout=0.3,
                           query_timeout=0.5)  # fmt: skip

    async def start(self) -> SplitBrainWatcher:
        await self._create_probe_table()
        aliases = self.shard.aliases
        self._tasks = [
            asyncio.create_task(
                self._watch(alias, i * self.period_s / len(aliases)), name=f"split-brain-{alias}"
            )
            for i, alias in enumerate(aliases)
        ]
        return self

    async def _create_probe_table(self) -> None:
        """Only on the Shard record's primary, and only if it is writable: created on any
        other tablet, the table would be an errant transaction there. Where it is missing
        (`Shard.create_test_table` makes it before any fault), samples rely on read_only."""
        primary = await self.shard.primary_alias()
        if primary is None:
            return
        with contextlib.suppress(MysqlError, TimeoutError):
            params = dataclasses.replace(self._params(primary, False), query_timeout=5.0)
            async with MysqlClient(params) as admin:
                if (await admin.status()).read_only:
                    return
                await admin.execute("CREATE DATABASE IF NOT EXISTS test")
                await admin.execute(
                    f"CREATE TABLE IF NOT EXISTS {PROBE_TABLE} "
                    "(id BIGINT PRIMARY KEY, alias VARCHAR(64), t DOUBLE)"
                )

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def __aenter__(self) -> SplitBrainWatcher:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if exc_type is None:
            self.assert_no_split_brain()
        else:
            overlaps = self.overlaps()
            if overlaps:
                print(f"split brain also seen: {overlaps[:3]}")

    async def _watch(self, alias: str, phase_s: float) -> None:
        """Sample one tablet every period; the tablets' phases are spread over the period so
        that one tablet's samples fall between another's."""
        admin = MysqlClient(self._params(alias, False))
        app = MysqlClient(self._params(alias, True))
        try:
            await asyncio.sleep(phase_s)
            while not self._stop.is_set():
                started = time.monotonic()
                await self._sample(alias, admin, app)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stop.wait(), max(0.0, self.period_s - (time.monotonic() - started))
                    )
        finally:
            for c in (admin, app):
                with contextlib.suppress(Exception):
                    await c.close()

    async def _sample(self, alias: str, admin: MysqlClient, app: MysqlClient) -> None:
        sent = time.monotonic()
        how = ""
        try:
            row = await admin.fetch_one("SELECT @@GLOBAL.read_only AS ro")
            if row is not None and not int(row["ro"]) and alias not in self.commit_on:
                how = "read_only=0"
        except (MysqlError, TimeoutError):
            self.unreachable[alias] = self.unreachable.get(alias, 0) + 1
            self.samples.append(Sample(alias, sent, time.monotonic(), False, "unreachable"))
            return
        try:
            if alias in self.commit_on:
                await app.execute(
                    f"INSERT INTO {PROBE_TABLE} (id, alias, t) VALUES (%s, %s, %s)",
                    (next(self._ids), alias, time.time()),
                )
                how = "app write acknowledged"
            else:
                # Rolled back: proves the server takes the write (read_only refuses the
                # statement) without adding a transaction to a tablet that must not have any.
                await _insert_rolled_back(app, next(self._ids), alias)
                how = how or "app write accepted"
        except (MysqlError, TimeoutError):
            pass  # refused by read_only, or no answer in time: not a write the server took
        self.samples.append(Sample(alias, sent, time.monotonic(), bool(how), how or "read_only=1"))

    async def wait_samples(self, n: int = 3, timeout: float = 10.0) -> None:
        """Until every tablet has been sampled `n` more times (instead of sleeping)."""

        def counts() -> dict[str, int]:
            out = dict.fromkeys(self.shard.aliases, 0)
            for smp in self.samples:
                out[smp.alias] = out.get(smp.alias, 0) + 1
            return out

        start = counts()
        deadline = time.monotonic() + timeout
        while any(c < start[a] + n for a, c in counts().items()):
            assert time.monotonic() < deadline, f"the watcher took no {n} samples in {timeout}s"
            await asyncio.sleep(self.period_s / 2)

    def _spans(self) -> list[_Span]:
        spans = []
        by_alias: dict[str, list[Sample]] = {}
        for s in sorted(self.samples, key=lambda s: s.sent):
            by_alias.setdefault(s.alias, []).append(s)
        for alias, samples in by_alias.items():
            for a, b in itertools.pairwise(samples):
                # Consecutive samples of one tablet, close enough in time that it cannot have
                # been fenced and unfenced in between (a slow answer breaks the span).
                if a.writable and b.writable and b.sent - a.answered <= MAX_GAP_S:
                    spans.append(_Span(alias, a.answered, b.sent))
        return spans

    def overlaps(self) -> list[str]:
        """Each proven moment at which two tablets accepted writes, in words."""
        found = []
        for span in self._spans():
            for s in self.samples:
                if (
                    s.alias != span.alias and s.writable
                    and span.start <= s.sent and s.answered <= span.end
                ):  # fmt: skip
                    found.append(
                        f"{s.alias} ({s.how}) at +{s.sent:.3f} while {span.alias} was writable "
                        f"from +{span.start:.3f} to +{span.end:.3f}"
                    )
        return found

    def assert_no_split_brain(self) -> None:
        overlaps = self.overlaps()
        assert not overlaps, f"two tablets accepted writes at once: {overlaps[:5]}"
        assert self.samples, "the split-brain watcher took no sample at all"

    def summary(self) -> str:
        writable = sorted({s.alias for s in self.samples if s.writable})
        return (f"{len(self.samples)} samples, writable at some point: {writable}, "
                f"unreachable samples {self.unreachable}")  # fmt: skip
