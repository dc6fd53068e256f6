"""A sharded keyspace with a migration target, on real servers, for the migration tests.

``mcluster``: a 2-shard keyspace (``commerce/-80``, ``commerce/80-``; a primary and a replica
each, InitShardPrimary done) plus a writable target server, in a fresh topology root on the
session's etcd, started by the same launcher as ``orchestrator local up --target``. It offers:

- sessions on a shard's current primary, the target, any tablet;
- ``start_worker(name)`` / ``start_scheduler()``: in-process workers and the leader's scheduler;
- ``ShardWriter``: a steady application on one shard (inserts, updates, deletes, multi-row
  transactions) that follows the shard's primary;
- ``rows_of`` / ``union_of``: every row of a table (or of several, merged) in key order, for
  row-by-row comparison of the target with its sources.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migration.context import Credentials
from migration.scheduler import Scheduler
from migration.store import MigrationStore
from migration.tasks import TaskOps
from migration.worker import Worker
from mysqlctl.client import MysqlParams
from mysqlctl.errors import MysqlError
from mysqlctl.session import Session, open_session
from orchestrator.local import cluster
from orchestrator.local.cluster import ClusterSpec, ClusterState
from orchestrator.local.etcd import EtcdServer
from tests.fixtures_cluster import eventually
from topo.store import TopoStore
from workflows.env import WorkflowEnv

SHARDS = ("-80", "80-")


@dataclass
class MigrationCluster:
    state: ClusterState
    store: TopoStore
    creds: Credentials
    env: WorkflowEnv
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    workers: dict[str, Worker] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def keyspace(self) -> str:
        return self.state.spec.keyspace

    @property
    def target(self) -> Any:
        assert self.state.target is not None
        return self.state.target

    @property
    def mstore(self) -> MigrationStore:
        return MigrationStore(self.store.kv, self.store.root)

    def ops(self) -> TaskOps:
        return TaskOps(self.store, self.creds)

    async def primary_alias(self, shard: str) -> str:
        alias = (await self.store.get_shard(self.keyspace, shard)).primary_alias
        assert alias is not None
        return alias

    async def session_on(self, alias: str) -> Session:
        s = self.state.tablet(alias).server
        return await open_session(self.creds.params(s.host, s.port))

    async def primary_session(self, shard: str) -> Session:
        return await self.session_on(await self.primary_alias(shard))

    async def app_session(self, shard: str) -> Session:
        """The application's account on the shard's primary: no SUPER, so `read_only` (a
        demoted or fenced primary) refuses its writes, as for a real client."""
        s = self.state.tablet(await self.primary_alias(shard)).server
        return await open_session(
            MysqlParams(s.host, s.port, s.app_user, s.app_password, connect_timeout=1.0,
                        query_timeout=5.0)
        )  # fmt: skip

    async def target_session(self) -> Session:
        return await open_session(self.creds.params(self.target.host, self.target.port))

    def start_worker(self, name: str, **kw: Any) -> Worker:
        w = Worker(name, self.state.store(lock_ttl=3), self.creds, **kw)
        self.workers[name] = w
        self.tasks.append(asyncio.create_task(w.run(), name=f"worker {name}"))
        return w

    def start_worker_process(
        self, name: str, *, faults: str = "", lease_ttl: int = 3
    ) -> subprocess.Popen[bytes]:
        """`orchestrator worker --name NAME` as a process of its own (killed at teardown);
        `faults` is ORC_FAULT_POINTS. Its log is `<cluster dir>/worker-NAME.log`."""
        env = {**os.environ, "ORC_MYSQL_USER": self.creds.user,
               "ORC_MYSQL_PASSWORD": self.creds.password, "ORC_LOG_JSON": "false",
               "ORC_FAULT_POINTS": faults}  # fmt: skip
        args = [sys.executable, "-m", "orchestrator", "worker", "--name", name,
                "--etcd", ",".join(self.state.etcd_endpoints), "--root", self.store.root,
                "--lease-ttl", str(lease_ttl)]  # fmt: skip
        with open(self.state.dir / f"worker-{name}.log", "ab") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        self.processes.append(proc)
        return proc

    def worker_log(self, name: str) -> str:
        return (self.state.dir / f"worker-{name}.log").read_text(errors="replace")

    def start_scheduler(self) -> None:
        self.tasks.append(asyncio.create_task(Scheduler(self.mstore).run(), name="scheduler"))

    async def close(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.kill()
            p.wait()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await t
        for w in self.workers.values():
            with contextlib.suppress(Exception):
                await w.topo.close()
        await self.env.close()
        await self.store.close()


@pytest.fixture
async def mcluster(etcd_server: EtcdServer, tmp_path: Path) -> AsyncIterator[MigrationCluster]:
    spec = ClusterSpec(
        shards=2, tablets_per_shard=2, service=False, root=f"/m-{uuid.uuid4().hex[:10]}",
        target=True,
    )  # fmt: skip
    state = await cluster.up(tmp_path / "c", spec, etcd_endpoints=[etcd_server.endpoint])
    store = state.store(lock_ttl=3)
    c = state.credentials()
    mc = MigrationCluster(
        state, store, Credentials(c.user, c.password), WorkflowEnv(store, state.credentials())
    )
    try:
        yield mc
    finally:
        await mc.close()
        for server in state.servers():
            server.kill()


# -- data -----------------------------------------------------------------------------------

TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS {db}.{table} (id BIGINT PRIMARY KEY, v VARCHAR(64) NOT NULL, "
    "n INT NOT NULL DEFAULT 0, price DECIMAL(10,2) NULL, created DATETIME(3) NULL, "
    "note TEXT NULL) ENGINE=InnoDB"
)


async def create_shard_table(s: Session, db: str, table: str) -> None:
    await s.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    await s.execute(TABLE_DDL.format(db=db, table=table))


async def insert_rows(s: Session, db: str, table: str, ids: Sequence[int]) -> None:
    if not ids:
        return
    values = ", ".join(
        f"({i}, 'v{i}', {i % 97}, {i % 1000}.25, NOW(3), {'NULL' if i % 3 else repr('note ' + str(i))})"
        for i in ids
    )
    await s.execute(f"INSERT INTO {db}.{table} (id, v, n, price, created, note) VALUES {values}")


async def rows_of(s: Session, db: str, table: str) -> list[tuple[Any, ...]]:
    return await s.fetch_rows(f"SELECT * FROM {db}.{table} ORDER BY id", timeout=60)


def digest(rows: Sequence[tuple[Any, ...]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(repr(r).encode())
    return h.hexdigest()


async def union_of(
    mc: MigrationCluster, parts: Sequence[tuple[str, str, str]]
) -> list[tuple[Any, ...]]:
    """Every row of the (shard, db, table) tables, read on each shard's primary, in key order."""
    out: list[tuple[Any, ...]] = []
    for shard, db, table in parts:
        async with await mc.primary_session(shard) as s:
            out.extend(await rows_of(s, db, table))
    return sorted(out, key=lambda r: r[0])


async def wait_target_equals(
    mc: MigrationCluster,
    parts: Sequence[tuple[str, str, str]],
    target: tuple[str, str],
    timeout: float = 60,
) -> list[tuple[Any, ...]]:
    """Until the target table holds exactly the union of the parts, row by row."""
    last: dict[str, Any] = {}

    async def equal() -> bool:
        want = await union_of(mc, parts)
        try:
            async with await mc.target_session() as t:
                got = await rows_of(t, *target)
        except MysqlError:
            return False
        last["want"], last["got"] = want, got
        return digest(want) == digest(got)

    try:
        await eventually(equal, timeout, f"{target[0]}.{target[1]} to equal its sources", every=0.3)
    except AssertionError:
        want, got = last.get("want", []), last.get("got", [])
        w, g = {r[0]: r for r in want}, {r[0]: r for r in got}
        missing = sorted(set(w) - set(g))[:10]
        extra = sorted(set(g) - set(w))[:10]
        differ = sorted(k for k in set(w) & set(g) if w[k] != g[k])[:10]
        raise AssertionError(
            f"target differs from its sources: {len(want)} rows upstream, {len(got)} downstream;"
            f" missing ids {missing}, extra ids {extra}, different ids {differ}"
        ) from None
    return last["want"]


@dataclass
class ShardWriter:
    """A steady application on one shard's table: inserts, updates, deletes and multi-row
    transactions on the shard's current primary, ids from its own range. Counts what the
    server acknowledged (a failed statement is retried on the next primary)."""

    mc: MigrationCluster
    shard: str
    db: str
    table: str
    first_id: int
    acked: int = 0
    errors: list[str] = field(default_factory=list)
    # (id, time.monotonic() of its acknowledgement) of every inserted row, ids increasing:
    # how old the oldest write not yet downstream is (`lag_s`).
    inserted: list[tuple[int, float]] = field(default_factory=list)
    _ids: list[int] = field(default_factory=list)
    _next: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self, existing: Sequence[int] = ()) -> None:
        self._ids = list(existing)
        self._next = max([self.first_id, *[i + 1 for i in existing]])
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def wait_acked(self, n: int, timeout: float = 30) -> None:
        target = self.acked + n

        async def enough() -> bool:
            return self.acked >= target

        await eventually(enough, timeout, f"{n} acknowledged transactions on {self.shard}")

    def lag_s(self, newest_downstream: int | None) -> float:
        """How long ago the oldest acknowledged insert newer than `newest_downstream` (the
        highest id of ours the target has) was acknowledged; 0 when the target has them all.
        An upper bound: a newer row deleted meanwhile makes the target's newest id older."""
        floor = self.first_id - 1 if newest_downstream is None else newest_downstream
        at = bisect.bisect_right(self.inserted, (floor, float("inf")))
        return time.monotonic() - self.inserted[at][1] if at < len(self.inserted) else 0.0

    async def _run(self) -> None:
        rnd = random.Random(self.first_id)
        s: Session | None = None
        t = f"{self.db}.{self.table}"
        while not self._stop.is_set():
            try:
                if s is None or s.closed:
                    s = await self.mc.app_session(self.shard)
                op = rnd.random()
                if op < 0.45 or len(self._ids) < 10:
                    i = self._next
                    self._next += 1
                    await insert_rows(s, self.db, self.table, [i])
                    self._ids.append(i)
                    self.inserted.append((i, time.monotonic()))
                elif op < 0.7:
                    i = rnd.choice(self._ids)
                    await s.execute(
                        f"UPDATE {t} SET n = n + 1, v = CONCAT('u', id, '-', n) WHERE id = %s", (i,)
                    )
                elif op < 0.8:
                    i = self._ids.pop(rnd.randrange(len(self._ids)))
                    await s.execute(f"DELETE FROM {t} WHERE id = %s", (i,))
                else:
                    new = [self._next + k for k in range(3)]
                    self._next += 3
                    await s.begin()
                    await insert_rows(s, self.db, self.table, new)
                    await s.execute(
                        f"UPDATE {t} SET note = 'multi' WHERE id = %s", (rnd.choice(self._ids),)
                    )
                    await s.execute(f"DELETE FROM {t} WHERE id = %s", (new[1],))
                    await s.commit()
                    self._ids.extend([new[0], new[2]])
                    now = time.monotonic()
                    self.inserted += [(new[0], now), (new[2], now)]
                self.acked += 1
                await asyncio.sleep(0.002)
            except MysqlError as e:
                self.errors.append(type(e).__name__)
                if s is not None:
                    await s.close()
                s = None
                await asyncio.sleep(0.05)
        if s is not None:
            await s.close()


# -- the merge task of most tests ----------------------------------------------------------

PARTS = [("-80", "shard_db_1", "shard_table_1"), ("80-", "shard_db_2", "shard_table_1")]
TARGET = ("shard_db", "shard_table")


def merge_task(mc: MigrationCluster, name: str = "merge-orders", **extra: str) -> str:
    lines = [
        f"name: {name}",
        "task-mode: all",
        "shard-mode: pessimistic",
        f"target: {{host: {mc.target.host}, port: {mc.target.port}}}",
        "sources:",
        f"  - source-id: {mc.keyspace}/-80",
        f"  - source-id: {mc.keyspace}/80-",
        'block-allow-list: {do-dbs: ["shard_db_*"]}',
        "routes:",
        '  - {schema-pattern: "shard_db_*", table-pattern: "shard_table_*",',
        "     target-schema: shard_db, target-table: shard_table}",
        "loader: {chunk-rows: 200}",
        "syncer: {batch: 100}",
    ]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


async def seed(mc: MigrationCluster, rows_per_shard: int = 1000) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {}
    for n, (shard, db, table) in enumerate(PARTS):
        base = 1 + n * 10_000_000
        async with await mc.primary_session(shard) as s:
            await create_shard_table(s, db, table)
            ids[shard] = list(range(base, base + rows_per_shard))
            for k in range(0, rows_per_shard, 500):
                await insert_rows(s, db, table, ids[shard][k : k + 500])
    return ids


# -- service processes and the CLI (cluster operations) -------------------------------------


@dataclass
class ServiceProcess:
    """`orchestrator serve` as a process of its own on the cluster's topology (no worker of
    its own unless asked): its API at `url`, its JSON log at `log`."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


async def start_service_process(
    mc: MigrationCluster,
    name: str,
    *,
    election_ttl: int = 2,
    worker: bool = False,
    env: dict[str, str] | None = None,
) -> ServiceProcess:
    """Start it and wait for its port (read from its log) and /readyz."""
    import json
    import time
    import urllib.request

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ORC_")},
           "ORC_MYSQL_USER": mc.creds.user, "ORC_MYSQL_PASSWORD": mc.creds.password,
           "ORC_LOG_JSON": "true", "ORC_HEALTH_INTERVAL_S": "0.5", "ORC_HEALTH_TIMEOUT_S": "0.5",
           "ORC_ELECTION_TTL_S": str(election_ttl), "ORC_LOCK_TTL_S": "3",
           "ORC_WORKER_ENABLED": "true" if worker else "false", **(env or {})}  # fmt: skip
    args = [sys.executable, "-m", "orchestrator", "serve",
            "--etcd", ",".join(mc.state.etcd_endpoints), "--root", mc.store.root,
            "--listen", "127.0.0.1:0", "--instance-id", name]  # fmt: skip
    log = mc.state.dir / f"service-{name}.log"
    offset = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=f, stdin=subprocess.DEVNULL, env=env)
    mc.processes.append(proc)
    deadline = time.monotonic() + 30
    port = 0
    while not port:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"service {name} did not start:\n{log.read_text()[-3000:]}")
        with open(log, "rb") as rf:
            rf.seek(offset)
            for line in rf.read().decode(errors="replace").splitlines():
                with contextlib.suppress(ValueError, AttributeError):
                    ev = json.loads(line)
                    if ev.get("event") == "HTTP API listening":
                        port = int(ev["port"])
        await asyncio.sleep(0.05)
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        def get() -> bool:
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        return await asyncio.to_thread(get)

    await eventually(ready, 20, f"service {name} to be ready")
    return ServiceProcess(name, proc, url, log)


async def ctl(url: str, *args: str, timeout: float = 30) -> tuple[int, Any]:
    """`orchestrator ctl --server URL ARGS...`: (exit code, its output as JSON, else text)."""
    import json

    p = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "orchestrator", "ctl", "--server", url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("ORC_")},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(p.communicate(), timeout)
    text = out.decode(errors="replace")
    try:
        return p.returncode or 0, json.loads(text)
    except ValueError:
        return p.returncode or 0, text
