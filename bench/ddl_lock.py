"""Sharding DDL lock benchmark (issue 9): how long a pessimistic lock holds a merge task up.

A local cluster (`orchestrator.local`: etcd, 2 shards of a primary and a replica, a target) and,
in this process, the leader's scheduler (with the lock keeper) and one worker, as in
tests/migration. A merge task of 2 sources x 2 tables (`shard_db_N.shard_table_M` ->
`shard_db.shard_table`, `shard-mode: pessimistic`); a steady writer on every upstream table
(inserts and updates at a fixed rate on the shard's primary, each commit's latency recorded).
Per run, `ALTER TABLE ... ADD COLUMN cN INT` on each upstream table in turn, `--spacing` apart
(source -80's two tables, then 80-'s: the last source reaches the DDL last); right after the
last ALTER committed, one marker row on each table. Measured, from the etcd watch on the lock
keys, a poller on the target and the writers' acknowledgements:

- end to end, from the last ALTER committed upstream: the target has the column; every marker
  row is downstream (all subtasks flowing again);
- the lock path: the last source's report -> executing -> owner applied -> resuming -> every
  source resumed -> lock deleted (and its lifetime, created -> deleted, which includes the
  waiting for the other sources by design);
- the write stall each source saw upstream (max gap between acknowledged commits of its
  writers, and their commit latency, during the DDL) and the downstream apply gap per source
  (max gap between new rows of its tables appearing on the target).

At the end the writers stop and the target is compared with the union of the upstream tables
row by row (ordered hash).

    .venv/bin/python -m bench.ddl_lock [--runs N] [--quick] [--rate OPS] [--json out.json]

Prints figures, never pass/fail. Every process it starts is stopped however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import percentile, run_main, summary_ms, sweep, write_json
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
from orchestrator.logs import configure_logging
from topo.store import TopoStore

TASK = "bench-ddl"
TARGET = ("shard_db", "shard_table")
# (shard, db, table, first id); the source of a table is `<keyspace>/<shard>`
TABLES = [
    ("-80", "shard_db_1", "shard_table_1", 1),
    ("-80", "shard_db_1", "shard_table_2", 1_000_001),
    ("80-", "shard_db_2", "shard_table_1", 2_000_001),
    ("80-", "shard_db_2", "shard_table_2", 3_000_001),
]
WRITER_SPAN = 800_000  # writer ids: first .. first + WRITER_SPAN; markers above
MARKER_BASE = 900_000
SEED_ROWS = 200
TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS {db}.{table} (id BIGINT PRIMARY KEY, v VARCHAR(64) NOT NULL, "
    "n INT NOT NULL DEFAULT 0, price DECIMAL(10,2) NULL, created DATETIME(3) NULL, "
    "note TEXT NULL) ENGINE=InnoDB"
)
POLL_S = 0.005


def log(msg: str) -> None:
    print(msg, flush=True)


def task_yaml(state: ClusterState) -> str:
    ks, t = state.spec.keyspace, state.target
    assert t is not None
    return (
        f"name: {TASK}\n"
        "shard-mode: pessimistic\n"
        f"target: {{host: {t.host}, port: {t.port}}}\n"
        f"sources:\n  - source-id: {ks}/-80\n  - source-id: {ks}/80-\n"
        'block-allow-list: {do-dbs: ["shard_db_*"]}\n'
        "routes:\n"
        '  - {schema-pattern: "shard_db_*", table-pattern: "shard_table_*",'
        " target-schema: shard_db, target-table: shard_table}\n"
    )


def digest(rows: list[tuple[Any, ...]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(repr(r).encode())
    return h.hexdigest()


@dataclass
class Lab:
    """Everything this benchmark starts, so that `close` can stop it all."""

    dir: Path
    state: ClusterState | None = None
    stores: list[TopoStore] = field(default_factory=list)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)

    @property
    def st(self) -> ClusterState:
        assert self.state is not None
        return self.state

    def store(self, **kw: Any) -> TopoStore:
        s = self.st.store(**kw)
        self.stores.append(s)
        return s

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        t = asyncio.create_task(coro, name=name)
        self.tasks.append(t)
        return t

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.tasks:
            _done, pending = await asyncio.wait(self.tasks, timeout=10)
            for t in pending:
                log(f"task {t.get_name()} ignored its cancellation for 10 s; left behind")
        for s in self.sessions:
            with contextlib.suppress(BaseException):
                await s.close()
        for st in self.stores:
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(3):
                    await st.close()
        if (self.dir / "c").exists():
            with contextlib.suppress(BaseException):
                for line in await cluster.down(self.dir / "c"):
                    log(f"stopped {line}")
        await sweep(self.dir)


class Cluster:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.state = lab.st
        self.topo = lab.store(lock_ttl=3)
        c = self.state.credentials()
        self.creds = Credentials(c.user, c.password)
        self.mstore = MigrationStore(self.topo.kv, self.topo.root)
        self.ops = TaskOps(self.topo, self.creds)

    @property
    def keyspace(self) -> str:
        return self.state.spec.keyspace

    async def primary_server(self, shard: str) -> Any:
        alias = (await self.topo.get_shard(self.keyspace, shard)).primary_alias
        assert alias is not None
        return self.state.tablet(alias).server

    async def admin(self, shard: str) -> Session:
        s = await self.primary_server(shard)
        return await open_session(self.creds.params(s.host, s.port))

    async def app(self, shard: str) -> Session:
        s = await self.primary_server(shard)
        return await open_session(MysqlParams(s.host, s.port, s.app_user, s.app_password,
                                              connect_timeout=1.0, query_timeout=5.0))  # fmt: skip

    async def target(self) -> Session:
        t = self.state.target
        assert t is not None
        return await open_session(self.creds.params(t.host, t.port))


# -- upstream writers ------------------------------------------------------------------------


@dataclass
class Writer:
    """Inserts and updates at `rate` per second on one upstream table (paced on a schedule:
    a stall shows as a gap, not as a lower rate afterwards). Records (sent, acknowledged)."""

    c: Cluster
    shard: str
    db: str
    table: str
    first: int
    rate: float
    column: str | None = None  # the newest column of the table: new rows set it
    acks: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        rnd = random.Random(self.first)
        ids = list(range(self.first, self.first + SEED_ROWS))
        nxt = self.first + SEED_ROWS
        s: Session | None = None
        t = f"{self.db}.{self.table}"
        k, t0 = 0, time.monotonic()
        try:
            while not self._stop.is_set():
                k += 1
                delay = t0 + k / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    if s is None or s.closed:
                        s = await self.c.app(self.shard)
                    sent = time.monotonic()
                    if rnd.random() < 0.6:
                        cols, vals = "id, v, n, created", f"{nxt}, 'w{nxt}', {nxt % 97}, NOW(3)"
                        if self.column:
                            cols, vals = f"{cols}, {self.column}", f"{vals}, {nxt % 7}"
                        await s.execute(f"INSERT INTO {t} ({cols}) VALUES ({vals})")
                        ids.append(nxt)
                        nxt += 1
                    else:
                        await s.execute(
                            f"UPDATE {t} SET n = n + 1, v = CONCAT('u', id, '-', n) WHERE id = %s",
                            (rnd.choice(ids),),
                        )
                    self.acks.append((sent, time.monotonic()))
                except MysqlError as e:
                    self.errors.append(type(e).__name__)
                    if s is not None:
                        await s.close()
                    s = None
                    await asyncio.sleep(0.05)
        finally:
            if s is not None:
                await s.close()

    def stop(self) -> None:
        self._stop.set()


# -- watching: etcd (the lock) and the target ------------------------------------------------


@dataclass
class LockEvents:
    """Every change under the DDL prefix in etcd, with the time this process saw it."""

    events: list[tuple[float, str, dict[str, Any] | None]] = field(default_factory=list)

    async def follow(self, c: Cluster, start: int) -> None:
        prefix = f"{c.mstore.prefix}ddl/"
        async for ev in c.topo.kv.watch(prefix, prefix=True, start_revision=start):
            now = time.monotonic()
            body = None if ev.value is None else json.loads(ev.value)
            self.events.append((now, ev.key[len(prefix) :], body))

    def since(self, t: float) -> list[tuple[float, str, dict[str, Any] | None]]:
        return [e for e in self.events if e[0] >= t]


@dataclass
class TargetPoller:
    """Polls the target every POLL_S: the highest writer id of each upstream table, whether
    the run's column exists, which markers have arrived; records when each changed."""

    c: Cluster
    maxid_changes: dict[int, list[float]] = field(default_factory=lambda: {i: [] for i in range(4)})
    column: str | None = None
    column_seen: float | None = None
    markers: dict[int, int] = field(default_factory=dict)  # table -> marker id
    marker_seen: dict[int, float] = field(default_factory=dict)

    async def run(self) -> None:
        s = await self.c.target()
        last = [None] * 4
        db, tb = TARGET
        ranges = ", ".join(
            f"(SELECT MAX(id) FROM {db}.{tb} WHERE id BETWEEN {f} AND {f + WRITER_SPAN})"
            for *_x, f in TABLES
        )
        try:
            while True:
                col = self.column
                markers = dict(self.markers)
                sql = f"SELECT {ranges}"
                if col is not None and self.column_seen is None:
                    sql += (", (SELECT COUNT(*) FROM information_schema.COLUMNS WHERE "
                            f"TABLE_SCHEMA = '{db}' AND TABLE_NAME = '{tb}' AND "
                            f"COLUMN_NAME = '{col}')")  # fmt: skip
                pending = {i: m for i, m in markers.items() if i not in self.marker_seen}
                if pending:
                    sql += (f", (SELECT GROUP_CONCAT(id) FROM {db}.{tb} WHERE id IN "
                            f"({', '.join(str(m) for m in pending.values())}))")  # fmt: skip
                try:
                    (row,) = await s.fetch_rows(sql, timeout=5)
                except MysqlError:
                    await s.close()
                    await asyncio.sleep(0.1)
                    s = await self.c.target()
                    continue
                now = time.monotonic()
                for i in range(4):
                    if row[i] is not None and row[i] != last[i]:
                        last[i] = row[i]
                        self.maxid_changes[i].append(now)
                k = 4
                if col is not None and self.column_seen is None and self.column == col:
                    if int(row[k]) > 0:
                        self.column_seen = now
                    k += 1
                if pending:
                    raw = row[k]
                    got = set() if raw is None else {
                        int(x) for x in (raw.decode() if isinstance(raw, bytes) else raw).split(",")
                    }  # fmt: skip
                    for i, m in pending.items():
                        if m in got:
                            self.marker_seen.setdefault(i, now)
                await asyncio.sleep(POLL_S)
        finally:
            await s.close()


# -- one run ---------------------------------------------------------------------------------


def max_gap(times: list[float], lo: float, hi: float) -> float:
    """The longest interval without an event within [lo, hi] (edges count as events)."""
    pts = [lo, *sorted(t for t in times if lo < t < hi), hi]
    return max(b - a for a, b in itertools.pairwise(pts))


async def one_run(
    c: Cluster, n: int, writers: list[Writer], poller: TargetPoller, lockev: LockEvents,
    sessions: list[Session], spacing: float,
) -> dict[str, Any]:  # fmt: skip
    ks = c.keyspace
    col = f"c{n}"
    poller.column, poller.column_seen = col, None
    poller.markers, poller.marker_seen = {}, {}
    t_start = time.monotonic()
    alter_done: list[float] = []
    for i, (_shard, db, table, _first) in enumerate(TABLES):
        if i:
            await asyncio.sleep(spacing)
        await sessions[i].execute(f"ALTER TABLE {db}.{table} ADD COLUMN {col} INT")
        alter_done.append(time.monotonic())
        writers[i].column = col
    t_last = alter_done[-1]
    # A marker row on every table, written after the last ALTER committed.
    marks = {i: TABLES[i][3] + MARKER_BASE + n for i in range(4)}

    async def mark(i: int) -> None:
        _sh, db, table, _f = TABLES[i]
        await sessions[i].execute(
            f"INSERT INTO {db}.{table} (id, v, n, {col}) VALUES (%s, 'marker', 0, %s)",
            (marks[i], n),
        )

    await asyncio.gather(*(mark(i) for i in range(4)))
    t_marked = time.monotonic()
    poller.markers = marks
    lock_gone: float | None = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lock_gone = next(
            (t for t, k, b in lockev.since(t_start) if k.startswith("locks/") and b is None), None
        )
        if poller.column_seen and len(poller.marker_seen) == 4 and lock_gone:
            break
        await asyncio.sleep(0.02)
    else:
        raise RuntimeError(
            f"run {n}: not done after 60 s (column {poller.column_seen}, markers "
            f"{sorted(poller.marker_seen)}, lock gone {lock_gone}); locks: "
            f"{await c.ops.show_ddl_locks(TASK)}"
        )
    flowing = max(poller.marker_seen.values())
    await asyncio.sleep(0.5)  # the writers' acks and downstream rows just after the end
    t_end = flowing + 0.5
    # the lock's milestones, as seen on the etcd watch
    evs = lockev.since(t_start)
    infos = [t for t, k, b in evs if k.startswith("infos/") and b is not None]
    lock_puts = [(t, b) for t, k, b in evs if k.startswith("locks/") and b is not None]

    def first(pred: Any) -> float | None:
        return next((t for t, b in lock_puts if pred(b)), None)

    created = lock_puts[0][0] if lock_puts else None
    executing = first(lambda b: b["state"] == "executing")
    owner_done = first(lambda b: b["owner_done"])
    resuming = first(lambda b: b["state"] == "resuming")
    all_resumed = first(lambda b: len(b["resumed"]) >= 2)
    last_info = max(infos) if len(infos) >= 4 else None
    hist = [b for t, k, b in evs if k.startswith("history/") and b is not None]
    outcome = hist[-1]["outcome"] if hist else "?"

    def d(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 4)

    sources = {f"{ks}/-80": [0, 1], f"{ks}/80-": [2, 3]}
    stall: dict[str, Any] = {}
    for src, idx in sources.items():
        lo = alter_done[idx[0]] - 0.2
        acks = sorted(a for i in idx for _s, a in writers[i].acks)
        lat = [a - s for i in idx for s, a in writers[i].acks if lo <= s <= t_end]
        applied = sorted(t for i in idx for t in poller.maxid_changes[i])
        stall[src] = {
            "upstream_max_gap_s": round(max_gap(acks, lo, t_end), 4),
            # from the last ALTER committed on: while the lock resolves (no ALTER running)
            "upstream_max_gap_resolving_s": round(max_gap(acks, t_last, t_end), 4),
            "upstream_latency_p50_s": round(percentile(lat, 50), 4),
            "upstream_latency_max_s": round(max(lat, default=0.0), 4),
            "downstream_max_gap_s": round(max_gap(applied, lo, t_end), 4),
            # the time both its tables were held, by design: from its last ALTER
            "held_from_own_last_alter_s": d(alter_done[idx[-1]], flowing),
            "tables_max_gap_s": [
                round(max_gap(poller.maxid_changes[i], alter_done[i] - 0.2, t_end), 4) for i in idx
            ],
        }
    return {
        "run": n,
        "column": col,
        "outcome": outcome,
        "alter_offsets_s": [round(a - alter_done[0], 4) for a in alter_done],
        "markers_written_s": d(t_last, t_marked),
        "ddl_applied_s": d(t_last, poller.column_seen),
        "flowing_s": d(t_last, flowing),
        "markers_s": {
            f"{TABLES[i][1]}.{TABLES[i][2]}": d(t_last, t)
            for i, t in sorted(poller.marker_seen.items())
        },
        "reach_s": d(t_last, last_info),  # last ALTER committed -> its source reported it
        "lock_path_s": d(last_info, lock_gone),
        "lock_lifetime_s": d(created, lock_gone),
        "steps_s": {
            "report_to_executing": d(last_info, executing),
            "executing_to_owner_done": d(executing, owner_done),
            "owner_done_to_resuming": d(owner_done, resuming),
            "resuming_to_all_resumed": d(resuming, all_resumed),
            "all_resumed_to_deleted": d(all_resumed, lock_gone),
            # the subtasks' stream restart and the re-read of the held DML
            "all_resumed_to_flowing": d(all_resumed, flowing),
        },
        "stall": stall,
    }


# -- main ------------------------------------------------------------------------------------


async def wait_equal(c: Cluster, timeout: float = 120) -> tuple[int, str, str]:
    deadline = time.monotonic() + timeout
    want: list[tuple[Any, ...]] = []
    got: list[tuple[Any, ...]] = []
    while True:
        want = []
        for shard, db, table, _f in TABLES:
            async with await c.admin(shard) as s:
                want += await s.fetch_rows(f"SELECT * FROM {db}.{table} ORDER BY id", timeout=60)
        want.sort(key=lambda r: r[0])
        try:
            async with await c.target() as t:
                got = await t.fetch_rows(
                    f"SELECT * FROM {TARGET[0]}.{TARGET[1]} ORDER BY id", timeout=60
                )
        except MysqlError:  # the task has not created the target table yet
            got = []
        if digest(want) == digest(got) or time.monotonic() > deadline:
            return len(want), digest(want), digest(got)
        await asyncio.sleep(0.5)


def pct(values: Sequence[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None]
    s = summary_ms(v)
    return {"p50_ms": s["p50"], "p99_ms": s["p99"], "max_ms": s["max"], "n": s["n"]}


async def main(args: argparse.Namespace) -> None:
    configure_logging(json=False, level=args.log_level)
    runs = args.runs or (2 if args.quick else 5)
    base = Path(tempfile.mkdtemp(prefix="bench-ddl-lock-"))
    lab = Lab(base)
    doc: dict[str, Any] = {"runs": runs, "rate_per_table": args.rate, "spacing_s": args.spacing}
    try:
        t0 = time.monotonic()
        spec = ClusterSpec(shards=2, tablets_per_shard=2, target=True, service=False)
        lab.state = await cluster.up(base / "c", spec)
        log(f"cluster up in {time.monotonic() - t0:.1f} s ({base})")
        c = Cluster(lab)
        for shard, db, table, first in TABLES:
            async with await c.admin(shard) as s:
                await s.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
                await s.execute(TABLE_DDL.format(db=db, table=table))
                values = ", ".join(f"({i}, 'v{i}', {i % 97}, {i % 1000}.25, NOW(3), NULL)"
                                   for i in range(first, first + SEED_ROWS))  # fmt: skip
                await s.execute(f"INSERT INTO {db}.{table} VALUES {values}")
        lab.spawn(Scheduler(c.mstore).run(), "scheduler")
        worker = Worker("w1", lab.store(lock_ttl=3), c.creds)
        lab.spawn(worker.run(), "worker")
        await c.ops.start(task_yaml(c.state))
        n, w, g = await wait_equal(c, 60)
        if w != g:
            raise RuntimeError("the task did not catch up with its sources in 60 s")
        log(f"task {TASK} running, {n} rows downstream")
        lockev = LockEvents()
        lab.spawn(lockev.follow(c, await c.topo.kv.revision() + 1), "lock watch")
        poller = TargetPoller(c)
        lab.spawn(poller.run(), "target poller")
        writers = [Writer(c, sh, db, tb, f, args.rate) for sh, db, tb, f in TABLES]
        for wr in writers:
            lab.spawn(wr.run(), f"writer {wr.db}.{wr.table}")
        sessions = []
        for shard, *_r in TABLES:
            sessions.append(await c.admin(shard))
            lab.sessions.append(sessions[-1])
        await asyncio.sleep(2.0)  # the writers' steady state
        results = []
        for k in range(1, runs + 1):
            r = await one_run(c, k, writers, poller, lockev, sessions, args.spacing)
            results.append(r)
            st = r["steps_s"]
            log(f"run {k}: DDL downstream {r['ddl_applied_s']:.3f} s, flowing "
                f"{r['flowing_s']:.3f} s after the last ALTER; reach {r['reach_s']:.3f} s, lock "
                f"path {r['lock_path_s']:.3f} s (" + ", ".join(
                    f"{name} {v * 1000:.0f} ms" for name, v in st.items() if v is not None)
                + ")")  # fmt: skip
            await asyncio.sleep(1.0)
        for wr in writers:
            wr.stop()
        await asyncio.sleep(0.3)
        doc["runs_detail"] = results
        # baseline: writer latency outside the DDL windows (the first 2 s)
        first_alter = min(wr.acks[0][0] for wr in writers) + 2.0
        base_lat = [a - s for wr in writers for s, a in wr.acks if s < first_alter]
        doc["upstream_latency_baseline_ms"] = pct(base_lat)
        doc["upstream_max_gap_baseline_ms"] = {
            src: round(1000 * max_gap(sorted(a for i in idx for _s, a in writers[i].acks
                                             if a < first_alter), first_alter - 1.5,
                                      first_alter), 1)
            for src, idx in ((f"{c.keyspace}/-80", (0, 1)), (f"{c.keyspace}/80-", (2, 3)))
        }  # fmt: skip
        doc["writer_errors"] = {f"{wr.db}.{wr.table}": wr.errors for wr in writers}
        fig: dict[str, Any] = {
            "ddl_applied": pct([r["ddl_applied_s"] for r in results]),
            "flowing_again": pct([r["flowing_s"] for r in results]),
            "reach": pct([r["reach_s"] for r in results]),
            "lock_path": pct([r["lock_path_s"] for r in results]),
            "lock_lifetime": pct([r["lock_lifetime_s"] for r in results]),
        }
        for step in results[0]["steps_s"]:
            fig[f"step {step}"] = pct([r["steps_s"][step] for r in results])
        for src in results[0]["stall"]:
            for key in ("upstream_max_gap_s", "upstream_max_gap_resolving_s",
                        "upstream_latency_max_s", "downstream_max_gap_s",
                        "held_from_own_last_alter_s"):  # fmt: skip
                fig[f"{src} {key[:-2]}"] = pct([r["stall"][src][key] for r in results])
        doc["figures"] = fig
        # correctness
        n, w, g = await wait_equal(c)
        doc["verify"] = {"rows": n, "upstream_sha256": w, "target_sha256": g, "equal": w == g}
        log("")
        log(f"{'figure (over ' + str(runs) + ' runs)':58} {'p50 ms':>9} {'p99 ms':>9} "
            f"{'max ms':>9}")  # fmt: skip
        for name, v in fig.items():
            log(f"{name:58} {v['p50_ms']:9.1f} {v['p99_ms']:9.1f} {v['max_ms']:9.1f}")
        b = doc["upstream_latency_baseline_ms"]
        log(f"{'upstream commit latency, no DDL (baseline)':58} {b['p50_ms']:9.1f} "
            f"{b['p99_ms']:9.1f} {b['max_ms']:9.1f}")  # fmt: skip
        log(
            f"upstream max gap between acknowledged commits, no DDL (baseline): "
            f"{doc['upstream_max_gap_baseline_ms']} ms"
        )
        log(f"writer interval per table: {1000 / args.rate:.0f} ms; writer errors: "
            f"{sum(len(e) for e in doc['writer_errors'].values())}")  # fmt: skip
        log("goal: flowing again < 1000 ms after the last ALTER, lock path < 50 ms")
        log(
            f"verify: target {'EQUALS' if w == g else 'DIFFERS FROM'} the union of the 4 upstream"
            f" tables row by row ({n} rows; sha256 upstream {w[:16]}, target {g[:16]})"
        )
    finally:
        await lab.close()
        shutil.rmtree(base, ignore_errors=True)
    write_json(args.json, doc)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench.ddl_lock", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=0, help="runs (default 5, --quick 2)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rate", type=float, default=20.0, help="writer ops/s per upstream table")
    p.add_argument("--spacing", type=float, default=0.4, help="seconds between the ALTERs")
    p.add_argument("--json")
    p.add_argument("--log-level", default="error", help="of the in-process scheduler and worker")
    return p.parse_args(argv)


if __name__ == "__main__":
    run_main(main(parse(sys.argv[1:])))
