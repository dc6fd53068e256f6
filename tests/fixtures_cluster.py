"""A whole shard for workflow tests: real MariaDB servers registered as tablets in a fresh
topology root on the session's etcd, started by the same launcher as `orchestrator local up`."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mysqlctl.client import MysqlClient, MysqlParams, ServerStatus
from orchestrator.local import cluster
from orchestrator.local.cluster import ClusterSpec, ClusterState
from orchestrator.local.etcd import EtcdServer
from orchestrator.local.mariadb import MariadbServer
from topo.records import Durability, TabletType
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

    @property
    def aliases(self) -> list[str]:
        return [t.alias for t in self.state.tablets]

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
        return env

    async def primary_alias(self) -> str | None:
        return (await self.store.get_shard(self.keyspace, self.shard)).primary_alias

    async def statuses(self) -> dict[str, ServerStatus | BaseException]:
        running = [a for a in self.aliases if self.server(a).is_running()]
        results = await asyncio.gather(
            *(self.admin(a).status(timeout=3) for a in running), return_exceptions=True
        )
        return dict(zip(running, results, strict=True))

    async def create_test_table(self) -> None:
        primary = await self.primary_alias()
        assert primary is not None
        await self.admin(primary).execute("CREATE DATABASE IF NOT EXISTS test")
        await self.admin(primary).execute(
            "CREATE TABLE IF NOT EXISTS test.acked (id BIGINT PRIMARY KEY, t DOUBLE)"
        )

    async def check_invariants(self, *, wait_s: float = 10.0) -> str:
        """At most one writable primary; topology agrees with MySQL: the Shard's primary is the
        writable one, typed primary, and every running replica replicates from it. Retries
        until `wait_s` (replication takes a moment to connect). Returns the primary alias."""
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
        writable = [
            a for a, s in statuses.items() if isinstance(s, ServerStatus) and not s.read_only
        ]
        assert len(writable) <= 1, f"more than one writable server: {writable}"
        primary = await self.primary_alias()
        assert writable == [primary], f"writable {writable}, topology says primary {primary}"
        tablets = {t.alias: t for t in await self.store.list_tablets(keyspace=self.keyspace)}
        assert tablets[primary].type == TabletType.PRIMARY
        p = self.server(primary)
        for alias, s in statuses.items():
            if alias == primary or not isinstance(s, ServerStatus):
                continue
            t = tablets[alias]
            if t.type in (TabletType.SPARE, TabletType.DRAINED):
                continue
            assert t.type != TabletType.PRIMARY, f"{alias} typed primary besides {primary}"
            r = s.replication
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
        await self.env.close()
        await self.store.close()


ShardFactory = Callable[..., Awaitable[Shard]]


@pytest.fixture
async def shard_factory(etcd_server: EtcdServer, tmp_path: Path) -> AsyncIterator[ShardFactory]:
    """`await shard_factory(tablets=3, cells=("zone1",), durability="none")`: a running shard
    with InitShardPrimary done (first tablet primary)."""
    made: list[Shard] = []

    async def make(
        tablets: int = 3,
        cells: tuple[str, ...] = ("zone1",),
        durability: str = "none",
        settings: WorkflowSettings | None = None,
        **settings_kw: Any,
    ) -> Shard:
        root = f"/t-{uuid.uuid4().hex[:10]}"
        spec = ClusterSpec(
            tablets_per_shard=tablets, cells=cells, durability=Durability.parse(durability),
            service=False, root=root,
        )  # fmt: skip
        state = await cluster.up(
            tmp_path / f"c{len(made)}", spec, etcd_endpoints=[etcd_server.endpoint]
        )
        store = state.store(lock_ttl=3)
        env = WorkflowEnv(
            store, state.credentials(), settings=settings or WorkflowSettings(**settings_kw)
        )
        shard = Shard(state, store, env, spec.keyspace, "0")
        made.append(shard)
        return shard

    try:
        yield make
    finally:
        for s in made:
            await s.close()
            for t in s.state.tablets:
                t.server.kill()


@dataclass
class Writer:
    """Inserts numbered rows into test.acked on whatever the serving graph names as primary,
    as an application would, and remembers every id the server acknowledged."""

    shard: Shard
    acked: list[tuple[int, float]] = field(default_factory=list)
    errors: int = 0
    _task: asyncio.Task[None] | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def _primary_params(self) -> MysqlParams | None:
        graph = await self.shard.store.get_srv_keyspace("zone1", self.shard.keyspace)
        s = graph.shard(self.shard.shard)
        if s is None or s.primary is None or not s.primary_serving:
            return None
        return self.shard.app_params(s.primary.alias)

    async def _run(self) -> None:
        next_id = 1
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
                await client.execute(
                    "INSERT INTO test.acked (id, t) VALUES (%s, %s)", (next_id, time.time())
                )
                self.acked.append((next_id, time.monotonic()))
                next_id += 1
            except Exception:
                self.errors += 1
                next_id += 1  # an id whose insert failed may or may not exist; never reuse it
                await asyncio.sleep(0.005)
        if client is not None:
            await client.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    def max_gap_ms(self, after: float | None = None) -> float:
        times = [t for _, t in self.acked if after is None or t >= after]
        return max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0) * 1000

    async def missing_on(self, alias: str) -> list[int]:
        rows = await self.shard.admin(alias).fetch_all("SELECT id FROM test.acked")
        present = {int(r["id"]) for r in rows}
        return [i for i, _ in self.acked if i not in present]
