"""Migration benchmark: our sync and load against MariaDB's own replication and mydumper, on the
same data and machine, plus replication lag and worker failover.

Every server is started fresh in a temporary directory by the launcher of `orchestrator local`
(etcd, MariaDB sources, native replicas, targets); tasks run in this process (a scheduler and a
worker, as in tests/migration), except in the failover part, which runs two
`orchestrator worker` processes. Sections:

- ``sync``: N single-row and N/100 100-row transactions generated on a source (a stored
  procedure, binlog in ROW format); the same binlog applied (a) by a fresh MariaDB replica
  (``CHANGE MASTER ... MASTER_USE_GTID=slave_pos``, ``START SLAVE``, until ``MASTER_GTID_WAIT``
  returns) and (b) by our sync into a fresh target (an incremental task from the starting GTID,
  until its checkpoint holds the end position): rows/s and the ratio ours/native. The same
  with 4 sources merged into one table (native: multi-source replication, one connection per
  source).
- ``lag``: a paced writer at 2,000 rows/s per source (1 source, then 4 merged); each row holds
  its source insert time, and the target table has one more column whose default is the
  target's time when the row was written: lag p50/p99 per row.
- ``load``: a table of 1,000,000 rows (``--quick``: 200,000) copied by a full-mode task, then by
  ``mydumper`` + ``myloader`` (4 threads, 50k-row chunks) into the same target: rows/s, MB/s
  (of the source table's InnoDB data length) and the ratio.
- ``failover``: two worker processes, a steady writer (inserts, updates, deletes); SIGKILL of
  the worker holding the subtask; time until the other one claimed the checkpoint and applied
  new rows; then the target compared with the source row by row (lost, extra, different rows).
- ``drain``: the same with SIGTERM: the holder drains and the other worker takes over; also how
  long applying stopped (the old holder's last checkpoint move -> the new holder's first).

    .venv/bin/python -m bench.migration [--quick] [--only sync,lag,load,failover,drain] [--json out.json]

Prints figures, never pass/fail. Every process it starts is stopped however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import percentile, run_main, sweep, write_json
from migration.context import Credentials
from migration.scheduler import Scheduler
from migration.store import MigrationStore
from migration.tasks import TaskOps
from migration.worker import Worker
from mysqlctl.gtid import MariadbGtidSet
from mysqlctl.session import Session, open_session
from orchestrator.local import procs
from orchestrator.local.etcd import EtcdServer, start_etcd
from orchestrator.local.mariadb import MariadbServer, start_mariadb
from orchestrator.logs import configure_logging
from topo.store import TopoStore

ROOT = "/bench-migration"
COLUMNS = "id, v, n, price, created, note, ts"
TABLE = (
    "CREATE TABLE IF NOT EXISTS {db}.t (id BIGINT PRIMARY KEY, v VARCHAR(64) NOT NULL, "
    "n INT NOT NULL DEFAULT 0, price DECIMAL(10,2) NULL, created DATETIME(3) NULL, "
    "note TEXT NULL, ts DOUBLE NOT NULL{extra}) ENGINE=InnoDB"
)
# On the lag target only: when the target wrote the row (not in the binlog's column list, so
# the sync's INSERT leaves it to its default).
APPLIED_COLUMN = ", applied DOUBLE NULL DEFAULT (UNIX_TIMESTAMP(NOW(6)))"
ROW_VALUES = (
    "{i}, CONCAT('v', {i}), {i} % 97, ({i} % 1000) + 0.25, NOW(3), "
    "IF({i} % 3 = 0, CONCAT('note ', MD5({i})), NULL), UNIX_TIMESTAMP(NOW(6))"
)
# Server-side generators, created without binlogging (a replica never sees them).
PROCEDURES = [
    # n single-row transactions (autocommit: each statement of the loop commits on its own)
    f"""CREATE PROCEDURE {{db}}.gen_single(IN first BIGINT, IN cnt INT)
    BEGIN
      DECLARE i BIGINT DEFAULT first;
      WHILE i < first + cnt DO
        INSERT INTO {{db}}.t ({COLUMNS}) VALUES ({ROW_VALUES.format(i="i")});
        SET i = i + 1;
      END WHILE;
    END""",
    # cnt transactions of 100 rows each
    f"""CREATE PROCEDURE {{db}}.gen_multi(IN first BIGINT, IN cnt INT)
    BEGIN
      DECLARE k BIGINT DEFAULT 0;
      WHILE k < cnt DO
        INSERT INTO {{db}}.t ({COLUMNS})
          SELECT {ROW_VALUES.format(i="(first + k * 100 + seq)")} FROM seq_0_to_99;
        SET k = k + 1;
      END WHILE;
    END""",
    # `rate` single-row inserts per second for `secs` seconds; with `mix`, also updates and
    # deletes of earlier rows (every 4th and 10th step)
    f"""CREATE PROCEDURE {{db}}.gen_paced(IN first BIGINT, IN rate INT, IN secs DOUBLE,
                                          IN mix INT)
    BEGIN
      DECLARE i BIGINT DEFAULT 0;
      DECLARE t0 DOUBLE DEFAULT UNIX_TIMESTAMP(NOW(6));
      DECLARE d DOUBLE;
      WHILE i < rate * secs DO
        IF mix AND i > 20 AND i % 4 = 1 THEN
          UPDATE {{db}}.t SET n = n + 1, v = CONCAT('u', id, '-', n)
            WHERE id = first + FLOOR(RAND() * i);
        ELSEIF mix AND i > 20 AND i % 10 = 3 THEN
          DELETE FROM {{db}}.t WHERE id = first + FLOOR(RAND() * i);
        ELSE
          INSERT INTO {{db}}.t ({COLUMNS}) VALUES ({ROW_VALUES.format(i="(first + i)")});
        END IF;
        SET i = i + 1;
        IF i % 10 = 0 THEN
          SET d = t0 + i / rate - UNIX_TIMESTAMP(NOW(6));
          IF d > 0 THEN DO SLEEP(d); END IF;
        END IF;
      END WHILE;
    END""",
]


def log(msg: str) -> None:
    print(msg, flush=True)


@dataclass
class Lab:
    """Everything this benchmark starts, so that `close` can stop it all."""

    dir: Path
    etcd: list[EtcdServer] = field(default_factory=list)
    servers: list[MariadbServer] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stores: list[TopoStore] = field(default_factory=list)
    _next_id: int = 10

    @property
    def endpoints(self) -> list[str]:
        return [e.endpoint for e in self.etcd]

    async def start(self) -> None:
        self.etcd = await start_etcd(self.dir / "etcd")

    async def server(self, name: str) -> MariadbServer:
        self._next_id += 1
        s = await start_mariadb(self.dir / name, server_id=self._next_id, name=name)
        self.servers.append(s)
        return s

    async def stop_server(self, s: MariadbServer) -> None:
        await s.stop()
        s.kill()

    def store(self, **kw: Any) -> TopoStore:
        st = TopoStore(self.endpoints, root=ROOT, **kw)
        self.stores.append(st)
        return st

    def spawn(
        self, args: Sequence[str], logname: str, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with open(self.dir / logname, "ab") as f:
            p = subprocess.Popen(
                list(args), stdout=f, stderr=f, stdin=subprocess.DEVNULL,
                env={**os.environ, **env, procs.LOCAL_DIR_ENV: str(self.dir)},
                start_new_session=True,
            )  # fmt: skip
        self.processes.append(p)
        return p

    async def cancel_tasks(self) -> None:
        for t in self.tasks:
            t.cancel()
        if self.tasks:
            _done, pending = await asyncio.wait(self.tasks, timeout=10)
            for t in pending:
                log(f"task {t.get_name()} ignored its cancellation for 10 s; left behind:")
                t.print_stack(file=sys.stdout)
        self.tasks.clear()

    async def close(self) -> None:
        await self.cancel_tasks()
        for p in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                p.wait(5)
        for st in self.stores:
            with contextlib.suppress(BaseException):
                async with asyncio.timeout(3):
                    await st.close()
        await asyncio.gather(*(s.stop() for s in self.servers), return_exceptions=True)
        for s in self.servers:
            s.kill()
        for e in self.etcd:
            e.kill()


@dataclass
class Env:
    """The lab plus what every section uses: credentials, task commands, the in-process
    scheduler and worker."""

    lab: Lab
    creds: Credentials
    quick: bool
    variants: set[str] = field(default_factory=set)
    ops: TaskOps = field(init=False)
    worker_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.ops = TaskOps(self.lab.store(), self.creds)

    def start_scheduler(self) -> None:
        mstore = MigrationStore(self.ops.topo.kv, self.ops.topo.root)
        self.lab.tasks.append(asyncio.create_task(Scheduler(mstore).run(), name="scheduler"))

    def start_worker(self) -> None:
        w = Worker("inproc", self.lab.store(lock_ttl=3), self.creds)
        self.worker_task = asyncio.create_task(w.run(), name="worker inproc")
        self.lab.tasks.append(self.worker_task)

    async def stop_worker(self) -> None:
        if self.worker_task is not None:
            self.worker_task.cancel()
            await asyncio.wait([self.worker_task], timeout=10)
            self.worker_task = None


async def session(env: Env, s: MariadbServer, timeout: float = 600) -> Session:
    return await open_session(env.creds.params(s.host, s.port, query_timeout=timeout))


async def scalar(s: Session, sql: str, args: Sequence[object] | None = None) -> Any:
    v = (await s.fetch_rows(sql, args, timeout=600))[0][0]
    return v.decode() if isinstance(v, bytes) else v


async def gtid_pos(s: Session) -> str:
    return str(await scalar(s, "SELECT @@GLOBAL.gtid_binlog_pos") or "")


def merge_positions(positions: Sequence[str]) -> str:
    """One MariaDB position holding each domain's last GTID of all of them."""
    out: dict[str, str] = {}
    for p in positions:
        for g in filter(None, (x.strip() for x in p.split(","))):
            d, _sid, seq = g.split("-")
            if d not in out or int(out[d].split("-")[2]) < int(seq):
                out[d] = g
    return ",".join(out[d] for d in sorted(out, key=int))


async def prepare_source(env: Env, src: MariadbServer, db: str, domain: int = 0) -> Session:
    """The db, its table and the generators; fast commits (the source's durability is not what
    is measured). Returns a session whose transactions are logged in `domain`."""
    s = await session(env, src, timeout=3600)
    await s.execute("SET GLOBAL sync_binlog = 0")
    await s.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
    await s.execute(f"SET SESSION gtid_domain_id = {domain}")
    await s.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    await s.execute(TABLE.format(db=db, extra=""))
    await s.execute("SET SESSION sql_log_bin = 0")
    for p in PROCEDURES:
        await s.execute(p.format(db=db))
    await s.execute("SET SESSION sql_log_bin = 1")
    return s


async def create_downstream_table(
    env: Env, server: MariadbServer, db: str, extra: str = ""
) -> None:
    async with await session(env, server) as s:
        await s.execute("SET SESSION sql_log_bin = 0")
        await s.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
        await s.execute(TABLE.format(db=db, extra=extra))


def task_yaml(
    name: str, mode: str, target: MariadbServer, sources: Sequence[tuple[str, MariadbServer, str]],
    dbs: Sequence[str], *, merged_into: str | None = None, batch: int = 500,
    chunk: int = 5000,
) -> str:  # fmt: skip
    lines = [f"name: {name}", f"task-mode: {mode}"]
    if merged_into:
        lines.append("shard-mode: pessimistic")
    lines += [f"target: {{host: {target.host}, port: {target.port}}}", "sources:"]
    for sid, srv, gtid in sources:
        lines.append(f"  - source-id: {sid}")
        lines.append(f"    from: {{host: {srv.host}, port: {srv.port}}}")
        if gtid:
            lines.append(f'    gtid: "{gtid}"')
    lines.append(f"block-allow-list: {{do-dbs: [{', '.join(dbs)}]}}")
    if merged_into:
        lines += ["routes:", f"  - {{schema-pattern: {dbs[0]}, target-schema: {merged_into}}}"]
    lines += [f"loader: {{chunk-rows: {chunk}}}", f"syncer: {{batch: {batch}}}"]
    return "\n".join(lines) + "\n"


def checkpoint_table(task: str) -> str:
    return f"dm_meta.`{task}_syncer_checkpoint`"


async def wait_checkpoints(
    env: Env, target: MariadbServer, task: str, want: dict[str, str], timeout: float = 900
) -> float:
    """Until every source's checkpoint GTID holds its wanted position; the monotonic time."""
    wants = {sid: MariadbGtidSet.parse(p) for sid, p in want.items()}
    deadline = time.monotonic() + timeout
    async with await session(env, target) as t:
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                rows = await t.fetch_rows(f"SELECT source_id, gtid FROM {checkpoint_table(task)}")
                got = {_text(r[0]): MariadbGtidSet.parse(_text(r[1])) for r in rows}
                if all(sid in got and got[sid].contains(w) for sid, w in wants.items()):
                    return time.monotonic()
            await asyncio.sleep(0.02)
    status = await env.ops.query_status(task)
    raise TimeoutError(f"task {task} did not reach {want} within {timeout}s: {status}")


async def stop_task(env: Env, name: str) -> None:
    with contextlib.suppress(Exception):
        await env.ops.stop(name)
    await asyncio.sleep(0.3)


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes | bytearray) else str(v)


def rate(rows: int, seconds: float) -> int:
    return round(rows / seconds) if seconds > 0 else 0


# -- 1. incremental sync vs native replication ------------------------------------------------


async def set_durability(env: Env, servers: Sequence[MariadbServer], *, durable: bool) -> None:
    for server in servers:
        async with await session(env, server) as s:
            await s.execute(f"SET GLOBAL sync_binlog = {1 if durable else 0}")
            await s.execute(f"SET GLOBAL innodb_flush_log_at_trx_commit = {1 if durable else 2}")


async def native_apply(
    env: Env, replica: MariadbServer, sources: Sequence[MariadbServer], start: str, end: str
) -> float:
    """Seconds for `replica` to replicate from `start` to `end` (one connection per source)."""
    async with await session(env, replica) as r:
        await r.execute("STOP ALL SLAVES")
        for i in range(len(sources)):
            with contextlib.suppress(Exception):
                await r.execute(f"RESET SLAVE 's{i}' ALL")
        await r.execute("SET GLOBAL gtid_slave_pos = %s", (start,))
        for i, src in enumerate(sources):
            await r.execute(
                f"CHANGE MASTER 's{i}' TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s,"
                " MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos",
                (src.host, src.port, env.creds.user, env.creds.password),
            )
        t0 = time.monotonic()
        await r.execute("START ALL SLAVES")
        got = await scalar(r, "SELECT MASTER_GTID_WAIT(%s, 900)", (end,))
        t1 = time.monotonic()
        if int(got) != 0:
            raise TimeoutError(f"native replica did not reach {end}")
        await r.execute("STOP ALL SLAVES")
    return t1 - t0


async def ours_apply(
    env: Env, name: str, target: MariadbServer, sources: Sequence[tuple[str, MariadbServer, str]],
    ends: dict[str, str], dbs: Sequence[str], merged_into: str | None = None,
) -> tuple[float, float, float]:  # fmt: skip
    """(seconds from start-task until every checkpoint holds its end, of which start-task,
    CPU seconds this process used meanwhile)."""
    yaml = task_yaml(name, "incremental", target, sources, dbs, merged_into=merged_into)
    t0, cpu0 = time.monotonic(), time.process_time()
    result = await env.ops.start(yaml)
    t_started = time.monotonic()
    assert result["result"], result
    t1 = await wait_checkpoints(env, target, name, ends)
    cpu = time.process_time() - cpu0
    await stop_task(env, name)
    return t1 - t0, t_started - t0, cpu


async def section_sync(env: Env, out: dict[str, Any]) -> None:
    lab = env.lab
    n_single = 20_000 if env.quick else 60_000
    n_multi = 1_000 if env.quick else 4_000  # transactions of 100 rows
    n_durable = 3_000 if env.quick else 10_000
    src = await lab.server("src1")
    replica = await lab.server("replica1")
    target = await lab.server("target1")
    res: dict[str, Any] = {}
    # Durability of the two downstreams (the native replica, our target) while they apply:
    # "relaxed" (sync_binlog=0, innodb_flush_log_at_trx_commit=2) measures the appliers;
    # "durable" (the launcher's sync_binlog=1, flush at every commit) also the disk's fsyncs.
    for variant, proc, count, rows, durable in (
        ("single_row", "gen_single", n_single, n_single, False),
        ("100_row", "gen_multi", n_multi, n_multi * 100, False),
        ("single_row_durable", "gen_single", n_durable, n_durable, True),
    ):
        if env.variants and variant not in env.variants:
            continue
        await set_durability(env, [replica, target], durable=durable)
        db = f"bench_{variant}"
        s = await prepare_source(env, src, db)
        p0 = await gtid_pos(s)
        t = time.monotonic()
        await s.execute(f"CALL {db}.{proc}(1, {count})", timeout=3600)
        gen_s = time.monotonic() - t
        p1 = await gtid_pos(s)
        await s.close()
        for server in (replica, target):
            await create_downstream_table(env, server, db)
        native_s = await native_apply(env, replica, [src], p0, p1)
        ours_s, start_s, cpu_s = await ours_apply(
            env, f"sync-{variant.replace('_', '-')}", target, [("src1", src, p0)], {"src1": p1},
            [db],
        )  # fmt: skip
        r = {
            "transactions": count, "rows": rows, "durable": durable,
            "generate_s": round(gen_s, 2),
            "native_s": round(native_s, 3), "native_rows_per_s": rate(rows, native_s),
            "ours_s": round(ours_s, 3), "ours_rows_per_s": rate(rows, ours_s),
            "ours_start_task_s": round(start_s, 3), "ours_cpu_s": round(cpu_s, 2),
            "ours_rows_per_cpu_s": rate(rows, cpu_s), "ratio": round(native_s / ours_s, 3),
        }  # fmt: skip
        res[variant] = r
        log(f"  sync {variant}: {rows} rows in {count} transactions: native "
            f"{r['native_rows_per_s']} rows/s ({native_s:.2f}s), ours {r['ours_rows_per_s']} "
            f"rows/s ({ours_s:.2f}s, start-task {start_s:.2f}s, {r['ours_rows_per_cpu_s']} rows "
            f"per CPU second of ours): ours/native {r['ratio']}")  # fmt: skip
    await set_durability(env, [target], durable=False)
    await lab.stop_server(replica)
    out["sync"] = res
    if env.variants and "merged" not in env.variants:
        return
    # 4 sources merged into one table: each source logs in its own GTID domain (native
    # multi-source replication needs that); ids apart.
    k = 4
    srcs = [src] + [await lab.server(f"src{i}") for i in range(2, k + 1)]
    replica = await lab.server("replica4")
    per_source = n_single // k
    db = "bench_m"
    sessions = [await prepare_source(env, sv, db, domain=i + 1) for i, sv in enumerate(srcs)]
    starts = [await gtid_pos(s) for s in sessions]
    t = time.monotonic()
    await asyncio.gather(*(
        s.execute(f"CALL {db}.gen_single({1 + i * 100_000_000}, {per_source})", timeout=3600)
        for i, s in enumerate(sessions)
    ))  # fmt: skip
    gen_s = time.monotonic() - t
    ends = [await gtid_pos(s) for s in sessions]
    for s in sessions:
        await s.close()
    await set_durability(env, [replica], durable=False)
    await create_downstream_table(env, replica, db)
    await create_downstream_table(env, target, "bench_merged")
    native_s = await native_apply(
        env, replica, srcs, merge_positions(starts), merge_positions(ends)
    )
    ours_s, start_s, cpu_s = await ours_apply(
        env, "sync-merged", target,
        [(f"src{i + 1}", sv, starts[i]) for i, sv in enumerate(srcs)],
        {f"src{i + 1}": ends[i] for i in range(k)}, [db], merged_into="bench_merged",
    )  # fmt: skip
    rows = per_source * k
    r = {
        "sources": k, "rows": rows, "generate_s": round(gen_s, 2),
        "native_s": round(native_s, 3), "native_rows_per_s": rate(rows, native_s),
        "ours_s": round(ours_s, 3), "ours_rows_per_s": rate(rows, ours_s),
        "ours_start_task_s": round(start_s, 3), "ours_cpu_s": round(cpu_s, 2),
        "ours_rows_per_cpu_s": rate(rows, cpu_s), "ratio": round(native_s / ours_s, 3),
    }  # fmt: skip
    res["merged_4_single_row"] = r
    log(f"  sync 4 sources merged, single-row transactions: {rows} rows: native (multi-source) "
        f"{r['native_rows_per_s']} rows/s, ours {r['ours_rows_per_s']} rows/s: ours/native "
        f"{r['ratio']}")  # fmt: skip
    await lab.stop_server(replica)
    for sv in srcs[1:]:
        await lab.stop_server(sv)
    out["sync"] = res


# -- 2. lag at a steady rate ------------------------------------------------------------------


async def lag_run(
    env: Env, name: str, srcs: Sequence[MariadbServer], target: MariadbServer, db: str,
    seconds: float, rate_per_source: int,
) -> dict[str, Any]:  # fmt: skip
    merged = len(srcs) > 1
    tdb = f"{db}_merged" if merged else db
    sessions = [await prepare_source(env, sv, db, domain=i + 1 if merged else 0)
                for i, sv in enumerate(srcs)]  # fmt: skip
    starts = [await gtid_pos(s) for s in sessions]
    await create_downstream_table(env, target, tdb, APPLIED_COLUMN)
    sources = [(f"src{i + 1}", sv, starts[i]) for i, sv in enumerate(srcs)]
    result = await env.ops.start(task_yaml(name, "incremental", target, sources, [db],
                                           merged_into=tdb if merged else None))  # fmt: skip
    assert result["result"], result
    # Caught up (nothing to apply yet) before the writers start.
    await wait_checkpoints(env, target, name, {f"src{i + 1}": starts[i] for i in range(len(srcs))})
    behind: list[float] = []

    async def sample() -> None:
        while True:
            with contextlib.suppress(Exception):
                st = await env.ops.query_status(name)
                for e in st["sources"]:
                    v = e["subTaskStatus"][0]["sync"].get("secondsBehindMaster")
                    if v is not None:
                        behind.append(float(v))
            await asyncio.sleep(0.5)

    sampler = asyncio.create_task(sample())
    t = time.monotonic()
    await asyncio.gather(*(
        s.execute(f"CALL {db}.gen_paced({1 + i * 100_000_000}, {rate_per_source}, {seconds}, 0)",
                  timeout=3600)
        for i, s in enumerate(sessions)
    ))  # fmt: skip
    wrote_s = time.monotonic() - t
    ends = [await gtid_pos(s) for s in sessions]
    for s in sessions:
        await s.close()
    await wait_checkpoints(env, target, name, {f"src{i + 1}": ends[i] for i in range(len(srcs))})
    sampler.cancel()
    with contextlib.suppress(BaseException):
        await sampler
    await stop_task(env, name)
    async with await session(env, target) as tg:
        rows = await tg.fetch_rows(f"SELECT applied - ts FROM {tdb}.t")
    lags = [float(r[0]) * 1000 for r in rows]
    n = len(lags)
    return {
        "sources": len(srcs), "rows": n, "seconds": round(wrote_s, 2),
        "rows_per_s_per_source": round(n / len(srcs) / wrote_s),
        "lag_ms": {"p50": round(percentile(lags, 50), 1), "p99": round(percentile(lags, 99), 1),
                   "max": round(max(lags), 1) if lags else 0.0},
        "seconds_behind_master_max": round(max(behind), 3) if behind else None,
    }  # fmt: skip


async def section_lag(env: Env, out: dict[str, Any]) -> None:
    lab = env.lab
    seconds = 8.0 if env.quick else 20.0
    srcs = [await lab.server(f"lsrc{i}") for i in range(1, 5)]
    target = await lab.server("target-lag")
    res = {}
    for label, chosen in (("one_source", srcs[:1]), ("four_sources", srcs)):
        r = await lag_run(env, f"lag-{len(chosen)}", chosen, target, f"bench_lag{len(chosen)}",
                          seconds, 2000)  # fmt: skip
        res[label] = r
        log(f"  lag, {r['sources']} source(s) at {r['rows_per_s_per_source']} rows/s each: p50 "
            f"{r['lag_ms']['p50']} ms, p99 {r['lag_ms']['p99']} ms, max {r['lag_ms']['max']} ms "
            f"({r['rows']} rows)")  # fmt: skip
    for s in (*srcs, target):
        await lab.stop_server(s)
    out["lag"] = res


# -- 3. full load vs mydumper/myloader --------------------------------------------------------


async def table_digest(s: Session, db: str) -> tuple[int, int]:
    row = (await s.fetch_rows(
        f"SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', {COLUMNS}))), 0) FROM {db}.t",
        timeout=600))[0]  # fmt: skip
    return int(row[0]), int(row[1])


async def run_cmd(args: list[str], lab: Lab, logname: str) -> float:
    t = time.monotonic()
    p = lab.spawn(args, logname, {})
    rc = await asyncio.to_thread(p.wait)
    if rc != 0:
        tail = (lab.dir / logname).read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{args[0]} exited {rc}: {tail}")
    return time.monotonic() - t


async def section_load(env: Env, out: dict[str, Any]) -> None:
    lab = env.lab
    n = 200_000 if env.quick else 1_000_000
    db = "bench_load"
    src = await lab.server("load-src")
    target = await lab.server("load-target")
    s = await prepare_source(env, src, db)
    step = 50_000
    for first in range(1, n + 1, step):
        last = min(n, first + step - 1)
        await s.execute(
            f"INSERT INTO {db}.t ({COLUMNS}) SELECT {ROW_VALUES.format(i='seq')} "
            f"FROM {db}.seq_{first}_to_{last}", timeout=600,
        )  # fmt: skip
    await s.execute(f"ANALYZE TABLE {db}.t")
    data_bytes = int(await scalar(
        s, "SELECT DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
        "AND TABLE_NAME = 't'", (db,)))  # fmt: skip
    want = await table_digest(s, db)
    await s.close()
    mb = data_bytes / 1e6
    res: dict[str, Any] = {"rows": n, "source_data_mb": round(mb, 1)}

    # ours
    name = "load-full"
    t0, cpu0 = time.monotonic(), time.process_time()
    result = await env.ops.start(task_yaml(name, "full", target, [("load-src", src, "")], [db]))
    assert result["result"], result
    async with await session(env, target) as t:
        while True:
            with contextlib.suppress(Exception):
                state = await scalar(t, f"SELECT load_state FROM {checkpoint_table(name)}")
                if state == "done":
                    break
            if time.monotonic() - t0 > 1800:
                raise TimeoutError("load did not finish")
            await asyncio.sleep(0.05)
        ours_s, cpu_s = time.monotonic() - t0, time.process_time() - cpu0
        got = await table_digest(t, db)
    await stop_task(env, name)
    res["ours"] = {"s": round(ours_s, 2), "rows_per_s": rate(n, ours_s),
                   "mb_per_s": round(mb / ours_s, 1), "cpu_s": round(cpu_s, 2),
                   "rows_per_cpu_s": rate(n, cpu_s), "equal": got == want}  # fmt: skip
    log(
        f"  load {n} rows ({mb:.0f} MB): ours {res['ours']['rows_per_s']} rows/s, "
        f"{res['ours']['mb_per_s']} MB/s ({ours_s:.2f}s; target equal to source: {got == want})"
    )

    # mydumper + myloader on the same table into the same target
    if not (shutil.which("mydumper") and shutil.which("myloader")):
        res["mydumper"] = None
        log("  mydumper/myloader are not installed (apt-get install -y mydumper): no comparison")
        out["load"] = res
        return
    async with await session(env, target) as t:
        await t.execute(f"DROP DATABASE {db}")
    dump = lab.dir / "dump"
    common = ["-u", env.creds.user, "-p", env.creds.password, "-t", "4"]
    dump_s = await run_cmd(
        ["mydumper", "-h", src.host, "-P", str(src.port), *common, "-B", db, "-r", "50000",
         "--trx-consistency-only", "-o", str(dump)], lab, "mydumper.log",
    )  # fmt: skip
    dump_bytes = sum(f.stat().st_size for f in dump.iterdir() if f.is_file())
    # --enable-binlog: the target logs what is loaded, as it does for our load.
    load_s = await run_cmd(
        ["myloader", "-h", target.host, "-P", str(target.port), *common, "-d", str(dump),
         "-B", db, "--enable-binlog"], lab, "myloader.log",
    )  # fmt: skip
    async with await session(env, target) as t:
        got = await table_digest(t, db)
    total = dump_s + load_s
    res["mydumper"] = {
        "dump_s": round(dump_s, 2), "load_s": round(load_s, 2), "s": round(total, 2),
        "rows_per_s": rate(n, total), "mb_per_s": round(mb / total, 1),
        "dump_mb": round(dump_bytes / 1e6, 1), "equal": got == want,
    }  # fmt: skip
    res["ratio"] = round(total / ours_s, 3)
    log(f"  load: mydumper {dump_s:.2f}s + myloader {load_s:.2f}s = {total:.2f}s "
        f"({res['mydumper']['rows_per_s']} rows/s, {res['mydumper']['mb_per_s']} MB/s; equal: "
        f"{got == want}): ours/mydumper {res['ratio']}")  # fmt: skip
    for sv in (src, target):
        await lab.stop_server(sv)
    out["load"] = res


# -- 4. worker failover -----------------------------------------------------------------------


async def section_failover(env: Env, out: dict[str, Any]) -> None:
    """SIGKILL of the worker holding the subtask: the other one takes over after its lease."""
    await _handover(env, out, key="failover", sig=signal.SIGKILL)


async def section_drain(env: Env, out: dict[str, Any]) -> None:
    """SIGTERM of the worker holding the subtask: it drains (finishes its batch, flushes its
    checkpoint, releases its binding) and the other one takes over at once (goal: applying
    stops for < 2 s)."""
    await _handover(env, out, key="drain", sig=signal.SIGTERM)


async def _handover(env: Env, out: dict[str, Any], *, key: str, sig: signal.Signals) -> None:
    lab = env.lab
    await env.stop_worker()  # only the two worker processes may take the subtask
    await asyncio.sleep(0.5)
    db = f"bench_{key}"
    src = await lab.server(f"{key}-src")
    target = await lab.server(f"{key}-target")
    s = await prepare_source(env, src, db)
    await s.execute(f"CALL {db}.gen_multi(1, 10)")  # 1,000 rows for the load
    wenv = {"ORC_MYSQL_USER": env.creds.user, "ORC_MYSQL_PASSWORD": env.creds.password,
            "ORC_LOG_LEVEL": "warning"}  # fmt: skip
    workers: dict[str, subprocess.Popen[bytes]] = {}
    for w in ("w1", "w2"):
        workers[w] = lab.spawn(
            [str(Path(sys.executable).with_name("orchestrator")), "worker", "--name", w,
             "--etcd", ",".join(lab.endpoints), "--root", ROOT, "--lease-ttl", "3"],
            f"worker-{w}.log", wenv,
        )  # fmt: skip
    mstore = MigrationStore(env.ops.topo.kv, env.ops.topo.root)
    deadline = time.monotonic() + 30
    while len(await mstore.list_workers()) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("worker processes did not register")
        await asyncio.sleep(0.1)
    name = key
    result = await env.ops.start(task_yaml(name, "all", target, [(f"{key}-src", src, "")], [db]))
    assert result["result"], result
    await wait_checkpoints(env, target, name, {f"{key}-src": await gtid_pos(s)})
    seconds = 12.0 if env.quick else 20.0
    writer = asyncio.create_task(
        s.execute(f"CALL {db}.gen_paced(100000, 500, {seconds}, 1)", timeout=3600)
    )
    await asyncio.sleep(3.0)
    holder = (await mstore.list_bindings(name))[0]
    async with await session(env, target) as t:
        before = (await t.fetch_rows(f"SELECT epoch, gtid FROM {checkpoint_table(name)}"))[0]
        t_kill = time.monotonic()
        os.killpg(workers[holder.worker].pid, sig)
        claimed = applied = None
        claim_gtid, last_gtid, last_move = "", _text(before[1]), t_kill
        while applied is None and time.monotonic() - t_kill < 60:
            epoch, gtid = (await t.fetch_rows(f"SELECT epoch, gtid FROM {checkpoint_table(name)}"))[
                0
            ]
            gtid = _text(gtid)
            if claimed is None and int(epoch) > int(before[0]):
                claimed, claim_gtid = time.monotonic(), gtid
            elif claimed is not None and gtid != claim_gtid:
                applied = time.monotonic()
            elif claimed is None and gtid != last_gtid:
                last_gtid, last_move = gtid, time.monotonic()  # the old holder still applies
            await asyncio.sleep(0.01)
    new_holder = (await mstore.list_bindings(name))[0]
    await writer
    end = await gtid_pos(s)
    await wait_checkpoints(env, target, name, {f"{key}-src": end})
    upstream = await s.fetch_rows(f"SELECT {COLUMNS} FROM {db}.t ORDER BY id", timeout=600)
    await s.close()
    async with await session(env, target) as t:
        downstream = await t.fetch_rows(f"SELECT {COLUMNS} FROM {db}.t ORDER BY id", timeout=600)
    status = await env.ops.query_status(name)
    await stop_task(env, name)
    up = {r[0]: r for r in upstream}
    down = {r[0]: r for r in downstream}
    lost = sorted(set(up) - set(down))
    extra = sorted(set(down) - set(up))
    differ = sorted(k for k in set(up) & set(down) if up[k] != down[k])
    same = _digest(upstream) == _digest(downstream)
    r = {
        "killed": holder.worker, "took_over": new_holder.worker,
        "signal": sig.name, "epochs": [holder.epoch, new_holder.epoch], "lease_ttl_s": 3,
        "claim_s": round(claimed - t_kill, 3) if claimed else None,
        "first_apply_s": round(applied - t_kill, 3) if applied else None,
        # From the old holder's last checkpoint move to the new holder's first one.
        "apply_stopped_s": round(applied - last_move, 3) if applied else None,
        "rows_upstream": len(upstream), "rows_downstream": len(downstream),
        "lost": len(lost), "extra": len(extra), "different": len(differ),
        "ordered_hash_equal": same,
        "errors": [e["subTaskStatus"][0]["result"] for e in status["sources"]
                   if e["subTaskStatus"][0]["result"]],
    }  # fmt: skip
    out[key] = r
    log(f"  {key}: {sig.name} {holder.worker} -> {new_holder.worker} claimed after "
        f"{r['claim_s']}s, applied new rows after {r['first_apply_s']}s, applying stopped for "
        f"{r['apply_stopped_s']}s (lease TTL 3 s); rows "
        f"{len(upstream)} upstream / {len(downstream)} downstream: lost {len(lost)}, extra "
        f"{len(extra)}, different {len(differ)}; ordered hash equal: {same}")  # fmt: skip
    for p in workers.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    for sv in (src, target):
        await lab.stop_server(sv)


def _digest(rows: Sequence[tuple[Any, ...]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(repr(r).encode())
    return h.hexdigest()


SECTIONS = {"sync": section_sync, "lag": section_lag, "load": section_load,
            "failover": section_failover, "drain": section_drain}  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    configure_logging(json=False, level="error")
    only = [s for s in args.only.split(",") if s] if args.only else list(SECTIONS)
    unknown = set(only) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(sorted(unknown))}: {', '.join(SECTIONS)}")
    out: dict[str, Any] = {"quick": args.quick, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-migration-") as d:
        lab = Lab(Path(d))
        try:
            await lab.start()
            probe = await lab.server("probe")
            creds = Credentials(probe.admin_user, probe.admin_password, query_timeout=120)
            env = Env(lab, creds, args.quick, set(filter(None, args.variants.split(","))))
            await lab.stop_server(probe)
            env.start_scheduler()
            env.start_worker()
            for name in only:
                log(f"{name}:")
                t = time.monotonic()
                await SECTIONS[name](env, out)
                log(f"  ({time.monotonic() - t:.0f}s)")
        finally:
            await lab.close()
            await sweep(d)
    write_json(args.json, out)
    summary(out)


def summary(out: dict[str, Any]) -> None:
    log("summary:")
    for k, r in out.get("sync", {}).items():
        log(f"  sync {k}: ours {r['ours_rows_per_s']} rows/s, native {r['native_rows_per_s']} "
            f"rows/s, ours/native {r['ratio']}")  # fmt: skip
    for k, r in out.get("lag", {}).items():
        log(f"  lag {k}: p50 {r['lag_ms']['p50']} ms, p99 {r['lag_ms']['p99']} ms")
    if "load" in out:
        r = out["load"]
        m = r.get("mydumper")
        log(f"  load {r['rows']} rows: ours {r['ours']['rows_per_s']} rows/s "
            f"{r['ours']['mb_per_s']} MB/s" + (f", mydumper+myloader {m['rows_per_s']} rows/s "
            f"{m['mb_per_s']} MB/s, ours/mydumper {r['ratio']}" if m else ""))  # fmt: skip
    for key in ("failover", "drain"):
        if key in out:
            r = out[key]
            log(f"  {key} ({r['signal']}): applied again after {r['first_apply_s']} s, applying "
                f"stopped for {r['apply_stopped_s']} s; lost {r['lost']}, extra {r['extra']}, "
                f"different {r['different']}")  # fmt: skip


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="migration benchmark")
    p.add_argument("--quick", action="store_true", help="smaller data, shorter runs")
    p.add_argument("--only", help=f"comma-separated sections: {','.join(SECTIONS)}")
    p.add_argument(
        "--variants",
        default="",
        help="sync only: some of single_row,100_row,single_row_durable,merged",
    )
    p.add_argument("--json")
    run_main(main(p.parse_args()))
