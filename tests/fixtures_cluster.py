"""A whole shard for workflow tests: real MariaDB servers registered as tablets in a fresh
topology root on the session's etcd, started by the same launcher as `orchestrator local up`.

* ``shard_factory``: ``shard = await shard_factory(tablets=3, cells=("zone1",))``, a running
  shard with InitShardPrimary done (first tablet primary).
* ``shards_factory``: ``a, b = await shards_factory(shards=2)``, several shards of one keyspace
  in one topology root (so they share the serving graph), one ``Shard`` harness each.
* ``Writer``: an application inserting numbered rows through the serving graph's primary.
* ``eventually``: wait for a condition with a deadline instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from mysqlctl.client import MysqlClient, MysqlParams, ServerStatus
from mysqlctl.errors import MysqlServerError, MysqlTimeoutError, MysqlUnreachableError
from orchestrator.local import cluster
from orchestrator.local.cluster import ClusterSpec, ClusterState
from orchestrator.local.etcd import EtcdServer
from orchestrator.local.mariadb import MariadbServer
from topo.alias import shard_names
from topo.errors import TopoError
from topo.records import Durability, Tablet, TabletType
from topo.store import TopoStore
from workflows.env import WorkflowEnv, WorkflowSettings
from workflows.faults import FaultPoints


@dataclass
class Shard:
    """One shard's servers, topology and a workflow environment, plus checks on them."""

    state: ClusterState
    store: TopoStore
    env: WorkflowEnv
    keyspace: str
    shard: str
    _clients: dict[str, MysqlClient] = field(default_factory=dict)
    _envs: list[WorkflowEnv] = field(default_factory=list)

    @property
    def aliases(self) -> list[str]:
        return [t.alias for t in self.state.tablets if t.shard == self.shard]

    def server(self, alias: str) -> MariadbServer:
        return self.state.tablet(alias).server

    def admin(self, alias: str) -> MysqlClient:
        """A connection of the test's own (not the workflows' pool)."""
        if alias not in self._clients:
            s = self.server(alias)
            self._clients[alias] = MysqlClient(
                MysqlParams(s.host, s.port, s.admin_user, s.admin_password)
            )
        return self._clients[alias]

    def app_params(self, alias: str) -> MysqlParams:
        s = self.server(alias)
        return MysqlParams(s.host, s.port, s.app_user, s.app_password, query_timeout=2.0)

    def with_faults(self, **hooks: Callable[[], Awaitable[None]]) -> WorkflowEnv:
        """The same environment with in-process fault hooks (`prs_after_demote=...`)."""
        env = WorkflowEnv(
            self.store, self.env.creds, settings=self.env.settings,
            faults=FaultPoints(kill_at=frozenset(),
                               hooks={k.replace("_", ".", 1): v for k, v in hooks.items()}),
        )  # fmt: skip
        self._envs.append(env)
        return env

    def env_with(
        self, *, hooks: dict[str, Callable[[], Awaitable[None]]] | None = None, **settings: Any
    ) -> WorkflowEnv:
        """A second environment (its own connections) with some settings changed, e.g.
        ``lock_timeout=0.3``; ``hooks`` by fault point name (``{"prs.before_demote": fn}``)."""
        env = WorkflowEnv(
            self.store, self.env.creds, settings=replace(self.env.settings, **settings),
            faults=FaultPoints(kill_at=frozenset(), hooks=hooks or {}),
        )  # fmt: skip
        self._envs.append(env)
        return env

    async def tablet(self, alias: str) -> Tablet:
        return await self.store.get_tablet(alias)

    async def types(self) -> dict[str, TabletType]:
        """Every tablet's type in the topology, by alias."""
        return {a: (await self.tablet(a)).type for a in self.aliases}

    async def serving(self) -> tuple[str | None, bool]:
        """What the serving graph of the primary's cell says: (primary alias, serving)."""
        graph = await self.store.get_srv_keyspace("zone1", self.keyspace)
        s = graph.shard(self.shard)
        if s is None or s.primary is None:
            return None, False
        return s.primary.alias, s.primary_serving

    async def app_insert(self, alias: str, row_id: int) -> None:
        """One application write on `alias` (refused by read_only, as for a real client)."""
        async with MysqlClient(self.app_params(alias)) as c:
            await c.execute("INSERT INTO test.acked (id, t) VALUES (%s, %s)", (row_id, time.time()))

    async def row_ids(self, alias: str) -> set[int]:
        rows = await self.admin(alias).fetch_all("SELECT id FROM test.acked")
        return {int(r["id"]) for r in rows}

    async def wait_rows(self, alias: str, ids: set[int] | list[int], timeout: float = 10) -> None:
        """Until `alias` holds every id in `ids` (replication catching up)."""
        want = set(ids)

        async def has_all() -> bool:
            return want <= await self.row_ids(alias)

        await eventually(has_all, timeout, f"{alias} to hold rows {sorted(want)[-5:]}...")

    async def wait_replicating(self, alias: str, timeout: float = 10) -> None:
        """Until both replication threads of `alias` run."""

        async def running() -> bool:
            r = await self.admin(alias).replication_status()
            return r is not None and r.io_running and r.sql_running

        await eventually(running, timeout, f"{alias} to replicate")

    async def diverge(self, alias: str, row_id: int = 999_999) -> None:
        """Leave `alias` as a diverged former primary is left when it comes back: a transaction
        of its own (binlogged in domain 0) that no other server has, counted as replicated.
        Replication is stopped; once pointed at any other server and started, its IO thread
        stops with error 1236 (the source lacks the GTID it asks to resume after)."""
        c = self.admin(alias)
        await c.execute("STOP SLAVE")
        await c.execute("INSERT INTO test.acked (id, t) VALUES (%s, 0)", (row_id,))
        await c.execute("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos")

    async def primary_alias(self) -> str | None:
        return (await self.store.get_shard(self.keyspace, self.shard)).primary_alias

    async def statuses(self) -> dict[str, ServerStatus | BaseException]:
        """Every running server's status (or the error reading it), by alias."""
        running = [a for a in self.aliases if self.server(a).is_running()]
        results = await asyncio.gather(
            *(self.admin(a).status(timeout=3) for a in running), return_exceptions=True
        )
        return dict(zip(running, results, strict=True))

    async def writable(self) -> list[str]:
        """The running servers that take writes (sorted). A running server whose state cannot
        be read is not assumed read-only: AssertionError naming it (its state is unknown)."""
        statuses = await self.statuses()
        unknown = {a: s for a, s in statuses.items() if isinstance(s, BaseException)}
        assert not unknown, f"running servers whose read_only is unknown: {unknown}"
        return sorted(
            a for a, s in statuses.items() if isinstance(s, ServerStatus) and not s.read_only
        )

    async def create_test_table(self) -> None:
        """test.acked (the writer's rows) and test.split_brain_probe (the split-brain watcher's
        probe writes) on the primary, replicated to every tablet before any fault."""
        primary = await self.primary_alias()
        assert primary is not None
        await self.admin(primary).execute("CREATE DATABASE IF NOT EXISTS test")
        await self.admin(primary).execute(
            "CREATE TABLE IF NOT EXISTS test.acked (id BIGINT PRIMARY KEY, t DOUBLE)"
        )
        await self.admin(primary).execute(
            "CREATE TABLE IF NOT EXISTS test.split_brain_probe "
            "(id BIGINT PRIMARY KEY, alias VARCHAR(64), t DOUBLE)"
        )

    async def check_invariants(self, *, wait_s: float = 10.0) -> str:
        """Exactly one writable server, the primary the Shard record names, typed primary;
        every other running tablet (spare and drained too) read-only and not typed primary;
        every running replica or rdonly replicates from the primary with both threads running
        (a spare or drained tablet that replicates does so from the primary). A running server
        whose state cannot be read is a failure, never counted as read-only. Retries until
        `wait_s` (replication takes a moment to connect). Returns the primary alias."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return await self._invariants_once()
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _invariants_once(self) -> str:
        statuses = await self.statuses()
        unknown = {a: repr(s) for a, s in statuses.items() if isinstance(s, BaseException)}
        assert not unknown, f"running servers whose state is unknown: {unknown}"
        known = {a: s for a, s in statuses.items() if isinstance(s, ServerStatus)}
        writable = sorted(a for a, s in known.items() if not s.read_only)
        primary = await self.primary_alias()
        assert primary is not None, f"the Shard record names no primary; writable: {writable}"
        assert writable == [primary], (
            f"want exactly one writable server, the Shard record's primary {primary}; "
            f"writable: {writable}"
        )
        tablets = {t.alias: t for t in await self.store.list_tablets(keyspace=self.keyspace)}
        assert tablets[primary].type == TabletType.PRIMARY, (
            f"{primary} is typed {tablets[primary].type}"
        )
        p = self.server(primary)
        for alias, s in known.items():
            if alias == primary:
                continue
            t = tablets[alias]
            assert t.type != TabletType.PRIMARY, f"{alias} typed primary besides {primary}"
            r = s.replication
            if t.type in (TabletType.SPARE, TabletType.DRAINED):
                if r is not None and (r.io_running or r.sql_running):
                    assert (r.source_host, r.source_port) == (p.host, p.port), (
                        f"{t.type} {alias} replicates from {r.source_host}:{r.source_port}, "
                        f"not the primary {primary}"
                    )
                continue
            assert r is not None, f"{alias} is not replicating"
            assert (r.source_host, r.source_port) == (p.host, p.port), (
                f"{alias} replicates from {r.source_host}:{r.source_port}, not {primary}"
            )
            assert r.io_running and r.sql_running, f"{alias} replication not running: {r}"
        return primary

    async def close(self) -> None:
        for c in self._clients.values():
            with contextlib.suppress(Exception):
                await c.close()
        for e in self._envs:
            with contextlib.suppress(Exception):
                await e.close()
        await self.env.close()
        await self.store.close()


ER_OPTION_PREVENTS_STATEMENT = 1290  # a write refused by read_only

ShardFactory = Callable[..., Awaitable[Shard]]
ShardsFactory = Callable[..., Awaitable[list[Shard]]]


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, *, every: float = 0.05
) -> None:
    """Poll `check` until it returns True; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


class _Clusters:
    """Starts clusters for one test and tears every one of them down afterwards."""

    def __init__(self, etcd_server: EtcdServer, tmp_path: Path) -> None:
        self.etcd = etcd_server
        self.tmp = tmp_path
        self.count = 0
        self.made: list[Shard] = []
        self.states: list[ClusterState] = []

    async def make(
        self,
        tablets: int = 3,
        cells: tuple[str, ...] = ("zone1",),
        durability: str = "none",
        settings: WorkflowSettings | None = None,
        shards: int = 1,
        **settings_kw: Any,
    ) -> list[Shard]:
        root = f"/t-{uuid.uuid4().hex[:10]}"
        spec = ClusterSpec(
            tablets_per_shard=tablets, cells=cells, durability=Durability.parse(durability),
            service=False, root=root, shards=shards,
        )  # fmt: skip
        self.count += 1
        state = await cluster.up(
            self.tmp / f"c{self.count}", spec, etcd_endpoints=[self.etcd.endpoint]
        )
        self.states.append(state)
        out = []
        for name in shard_names(shards):
            store = state.store(lock_ttl=3)
            env = WorkflowEnv(
                store, state.credentials(), settings=settings or WorkflowSettings(**settings_kw)
            )
            shard = Shard(state, store, env, spec.keyspace, name)
            self.made.append(shard)
            out.append(shard)
        return out

    async def close(self) -> None:
        for s in self.made:
            await s.close()
        for state in self.states:
            for t in state.tablets:
                t.server.kill()


@pytest.fixture
async def shard_factory(etcd_server: EtcdServer, tmp_path: Path) -> AsyncIterator[ShardFactory]:
    """`await shard_factory(tablets=3, cells=("zone1",), durability="none")`: a running shard
    with InitShardPrimary done (first tablet primary). Tablets are spread over the cells
    round-robin (zone1-101, zone2-102, zone1-103...)."""
    clusters = _Clusters(etcd_server, tmp_path)

    async def make(*args: Any, **kwargs: Any) -> Shard:
        (shard,) = await clusters.make(*args, **kwargs)
        return shard

    try:
        yield make
    finally:
        await clusters.close()


@pytest.fixture
async def shards_factory(etcd_server: EtcdServer, tmp_path: Path) -> AsyncIterator[ShardsFactory]:
    """`await shards_factory(shards=2, tablets=3)`: one keyspace of several shards (tablet uids
    101... for the first, 201... for the second), one `Shard` harness per shard."""
    clusters = _Clusters(etcd_server, tmp_path)
    try:
        yield clusters.make
    finally:
        await clusters.close()


def error_kind(e: BaseException) -> str:
    """Why one application write failed, as a short kind a test can allow or not:
    ``read_only`` (refused by the fence, MySQL error 1290), ``unreachable`` (refused, lost or
    no handshake), ``timeout`` (no answer in time, e.g. a semi-sync commit waiting for an ACK),
    ``topo`` (the serving graph could not be read), ``mysql-<code>`` (any other server error,
    e.g. ``mysql-1062``: a duplicate id) or the exception's class name."""
    if isinstance(e, MysqlServerError):
        return "read_only" if e.code == ER_OPTION_PREVENTS_STATEMENT else f"mysql-{e.code}"
    if isinstance(e, MysqlUnreachableError):
        return "unreachable"
    if isinstance(e, MysqlTimeoutError | TimeoutError):
        return "timeout"
    if isinstance(e, TopoError):
        return "topo"
    return type(e).__name__


@dataclass
class Writer:
    """Inserts numbered rows into test.acked on whatever the serving graph names as primary,
    as an application would, and remembers every id the server acknowledged, and why each
    failed write failed (`error_kinds`, `check_errors`)."""

    shard: Shard
    acked: list[tuple[int, float]] = field(default_factory=list)
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _next_id: int = 1

    def _take_id(self) -> int:
        i, self._next_id = self._next_id, self._next_id + 1
        return i

    async def _primary_params(self) -> MysqlParams | None:
        graph = await self.shard.store.get_srv_keyspace("zone1", self.shard.keyspace)
        s = graph.shard(self.shard.shard)
        if s is None or s.primary is None or not s.primary_serving:
            return None
        return self.shard.app_params(s.primary.alias)

    async def _run(self) -> None:
        client: MysqlClient | None = None
        params: MysqlParams | None = None
        while not self._stop.is_set():
            try:
                p = await self._primary_params()
                if p != params:
                    if client is not None:
                        await client.close()
                    client, params = (MysqlClient(p) if p else None), p
                if client is None:
                    await asyncio.sleep(0.005)
                    continue
                # An id whose insert failed may or may not exist: it is never reused.
                row_id = self._take_id()
                await client.execute(
                    "INSERT INTO test.acked (id, t) VALUES (%s, %s)", (row_id, time.time())
                )
                self.acked.append((row_id, time.monotonic()))
            except Exception as e:
                self._record_error(e)
                await asyncio.sleep(0.005)
        if client is not None:
            await client.close()

    def _record_error(self, e: BaseException) -> None:
        kind = error_kind(e)
        self.errors += 1
        self.error_kinds[kind] += 1
        self.error_samples.setdefault(kind, f"{type(e).__name__}: {e}"[:300])

    def check_errors(self, *allowed: str) -> None:
        """AssertionError if a write failed for a reason not in `allowed` (see `error_kind`)."""
        unexpected = {k: n for k, n in self.error_kinds.items() if k not in allowed}
        assert not unexpected, (
            f"writes failed for unexpected reasons {unexpected} (allowed: {sorted(allowed)}); "
            f"e.g. {[self.error_samples[k] for k in unexpected]}"
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def write(self, n: int) -> list[int]:
        """Insert `n` rows now, one by one, through the serving graph's primary (which must
        take them); returns their ids."""
        params = await self._primary_params()
        assert params is not None, "the serving graph names no serving primary"
        ids = [self._take_id() for _ in range(n)]
        async with MysqlClient(params) as client:
            for i in ids:
                await client.execute(
                    "INSERT INTO test.acked (id, t) VALUES (%s, %s)", (i, time.time())
                )
                self.acked.append((i, time.monotonic()))
        return ids

    async def wait_acked(self, n: int, timeout: float = 10) -> None:
        """Until at least `n` more rows have been acknowledged (the writer is running)."""
        target = len(self.acked) + n

        async def enough() -> bool:
            return len(self.acked) >= target

        try:
            await eventually(enough, timeout, f"{n} acknowledged writes", every=0.005)
        except AssertionError as e:
            raise AssertionError(
                f"{e}: {len(self.acked)} acknowledged, failures {dict(self.error_kinds)}"
            ) from None

    async def wait_total(self, n: int, timeout: float = 15) -> None:
        """Until at least `n` rows in all have been acknowledged (the writer is running)."""
        await self.wait_acked(n - len(self.acked), timeout)

    @property
    def ids(self) -> list[int]:
        return [i for i, _ in self.acked]

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def max_gap_ms(self, after: float | None = None) -> float:
        times = [t for _, t in self.acked if after is None or t >= after]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0) * 1000

    async def missing_on(self, alias: str) -> list[int]:
        present = await self.shard.row_ids(alias)
        return [i for i, _ in self.acked if i not in present]

    async def wait_all_on(self, alias: str, timeout: float = 10) -> None:
        """Until every acknowledged row is on `alias` (it may still be replicating)."""
        await self.shard.wait_rows(alias, self.ids, timeout)
