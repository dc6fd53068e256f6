"""Side by side, in one run over the same servers: what one health check's MySQL read costs with
each driver and statement choice (issue 13). Used by `python -m bench.healthcheck --variants`.

Each variant opens one connection per simulated tablet (the tablets of the bench's fleet: a
shard's primary record on a group's writable server, its replica records on that group's
replicas, so two checks in three read a replica's `SHOW SLAVE STATUS` row) and reads every
tablet once per interval, at most `concurrency` at a time, as the checker paces its cycles. It
measures the process's CPU per read (`time.process_time`, everything in the process: driver,
asyncio, the variant's own parsing), the tablets per core at 1 Hz that this allows, and the
latency of each read including the wait for the concurrency semaphore (what the checker's
per-check latency includes), p50/p99. Only the MySQL read differs between variants; the
checker's own work per check (analysis, metrics) comes on top and is measured by the main run.

Variants (`--variants` takes a comma-separated subset; all by default):

- `aiomysql-text`: the former client's read: aiomysql, the flavor's status statements as one
  multi-statement (text protocol), rows as dicts.
- `asyncmy-text`: the same statements and protocol with asyncmy.
- `aiomysql-cheap`, `asyncmy-cheap`, `asyncmy-cheap-prepared`: a cheap read every check (the
  status variables of the snapshot plus `SHOW GLOBAL STATUS` for `Slave_running` and the
  `Com_*` counters of CHANGE MASTER / START / STOP SLAVE), the full `SHOW SLAVE STATUS` only when
  those changed, when the last full read showed replication configured but not running, or
  every `CHEAP_FULL_EVERY` checks. A candidate, measured, not shipped: between full reads it
  cannot see lag grow or an IO error of a thread that reconnected, which today's check sees.
- `asyncmy-prepared`: the flavor's statements, each prepared once per connection (binary
  protocol), rows as dicts: what `MysqlClient.status()` now runs.
- `client`: `MysqlClient.status()` itself (the shipped code: the above plus the client's lock,
  deadlines, flavor parsing into `ServerStatus` and errant-GTID check).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import percentile
from mysqlctl import pipeline
from mysqlctl.client import MysqlClient, MysqlParams
from mysqlctl.flavor import MARIADB

VARIANTS = (
    "aiomysql-text",
    "asyncmy-text",
    "aiomysql-cheap",
    "asyncmy-cheap",
    "asyncmy-cheap-prepared",
    "asyncmy-prepared",
    "asyncmy-pipelined",
    "client",
)
CHEAP_FULL_EVERY = 10
# Opening thousands of connections on a busy small host can take a while; it is not measured.
_CONNECT_TIMEOUT_S = 10.0

_FULL = MARIADB.status_queries()
_CHEAP_STATUS = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('Slave_running', 'Com_change_master',"
    " 'Com_start_slave', 'Com_stop_slave', 'Com_start_all_slaves', 'Com_stop_all_slaves')"
)
_CHEAP = (_FULL[0], _CHEAP_STATUS)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str
    password: str


@dataclass
class _Cheap:
    """Per-connection state of the cheap-read candidates."""

    signature: tuple[Any, ...] | None = None
    since_full: int = 0
    replica_not_running: bool = False
    full_reads: int = 0


@dataclass
class _Conn:
    raw: Any
    prepared: dict[str, Any] = field(default_factory=dict)
    cheap: _Cheap = field(default_factory=_Cheap)


async def _sets_aiomysql(conn: Any, queries: tuple[str, ...]) -> list[list[dict[str, Any]]]:
    import aiomysql

    out: list[list[dict[str, Any]]] = []
    async with conn.cursor(aiomysql.DictCursor) as cur:
        await cur.execute("; ".join(queries))
        out.append(list(await cur.fetchall()))
        while await cur.nextset():
            out.append(list(await cur.fetchall()))
    return out


async def _sets_asyncmy(conn: Any, queries: tuple[str, ...]) -> list[list[dict[str, Any]]]:
    from asyncmy.cursors import DictCursor

    out: list[list[dict[str, Any]]] = []
    async with conn.cursor(DictCursor) as cur:
        await cur.execute("; ".join(queries))
        out.append(list(await cur.fetchall()))
        while await cur.nextset():
            out.append(list(await cur.fetchall()))
    return out


async def _statements(c: _Conn, queries: tuple[str, ...]) -> list[Any]:
    """The connection's prepared statements for `queries`, prepared on first use."""
    out = []
    for sql in queries:
        st = c.prepared.get(sql)
        if st is None:
            st = c.prepared[sql] = await c.raw.prepare(sql)
        out.append(st)
    return out


async def _sets_prepared(c: _Conn, queries: tuple[str, ...]) -> list[list[dict[str, Any]]]:
    return await pipeline.execute_each(await _statements(c, queries))


async def _sets_pipelined(c: _Conn, queries: tuple[str, ...]) -> list[list[dict[str, Any]]]:
    return await pipeline.execute_pipelined(c.raw, await _statements(c, queries))


Reader = Callable[[Any, tuple[str, ...]], Awaitable[list[list[dict[str, Any]]]]]


async def _cheap_check(c: _Conn, read: Reader) -> None:
    """The candidate's decision: cheap read, full read only when it says it must."""
    variables, status_rows = await read(c, _CHEAP)
    state = c.cheap
    signature = tuple(sorted((r["Variable_name"], r["Value"]) for r in status_rows))
    state.since_full += 1
    if (
        signature != state.signature
        or state.replica_not_running
        or state.since_full >= CHEAP_FULL_EVERY
    ):
        _vars, replica_rows = await read(c, _FULL)
        status = MARIADB.parse_status([_vars, replica_rows])
        r = status.replication
        state.replica_not_running = r is not None and not (r.io_running and r.sql_running)
        state.signature, state.since_full = signature, 0
        state.full_reads += 1
    else:
        # (A real implementation would keep the last full read's replication part here.)
        MARIADB.parse_status([variables, []])


async def _connect(variant: str, t: Target) -> Any:
    if variant == "client":
        client = MysqlClient(
            MysqlParams(t.host, t.port, t.user, t.password, connect_timeout=_CONNECT_TIMEOUT_S)
        )
        await client.connect()
        return client
    # The two drivers take the same connect arguments; aiomysql only for this comparison.
    driver = importlib.import_module("aiomysql" if variant.startswith("aiomysql") else "asyncmy")
    return _Conn(
        await driver.connect(
            host=t.host,
            port=t.port,
            user=t.user,
            password=t.password,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=_CONNECT_TIMEOUT_S,
        )
    )


def _probe(variant: str) -> Callable[[Any], Awaitable[Any]]:
    if variant == "client":
        return lambda client: client.status()
    if variant == "aiomysql-text":

        async def aiomysql_text(c: _Conn) -> Any:
            return MARIADB.parse_status(await _sets_aiomysql(c.raw, _FULL))

        return aiomysql_text
    if variant == "asyncmy-text":

        async def asyncmy_text(c: _Conn) -> Any:
            return MARIADB.parse_status(await _sets_asyncmy(c.raw, _FULL))

        return asyncmy_text
    if variant == "asyncmy-prepared":

        async def asyncmy_prepared(c: _Conn) -> Any:
            return MARIADB.parse_status(await _sets_prepared(c, _FULL))

        return asyncmy_prepared
    if variant == "asyncmy-pipelined":

        async def asyncmy_pipelined(c: _Conn) -> Any:
            return MARIADB.parse_status(await _sets_pipelined(c, _FULL))

        return asyncmy_pipelined
    readers: dict[str, Reader] = {
        "aiomysql-cheap": lambda c, q: _sets_aiomysql(c.raw, q),
        "asyncmy-cheap": lambda c, q: _sets_asyncmy(c.raw, q),
        "asyncmy-cheap-prepared": _sets_prepared,
    }
    read = readers[variant]
    return lambda c: _cheap_check(c, read)


async def _close(conn: Any) -> None:
    with contextlib.suppress(Exception):
        if isinstance(conn, MysqlClient):
            await conn.close()
        else:
            conn.raw.close()


async def measure_variant(
    variant: str, targets: list[Target], seconds: float, interval: float, concurrency: int
) -> dict[str, Any]:
    """Open one connection per target, read each once (warm-up: connects, prepares), then
    read all of them every `interval` for `seconds`."""
    sem = asyncio.Semaphore(64)

    async def connect(t: Target) -> Any:
        async with sem:
            return await _connect(variant, t)

    conns = await asyncio.gather(*(connect(t) for t in targets))
    probe = _probe(variant)
    limit = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    failed = 0

    async def one(conn: Any) -> None:
        nonlocal failed
        started = time.perf_counter()
        try:
            async with limit:
                await probe(conn)
        except Exception:
            failed += 1
        latencies.append(time.perf_counter() - started)

    try:
        await asyncio.gather(*(one(c) for c in conns))
        latencies.clear()
        failed = 0
        full_before = sum(c.cheap.full_reads for c in conns if isinstance(c, _Conn))
        loop = asyncio.get_running_loop()
        cycles: list[float] = []
        checks = 0
        cpu0, t0 = time.process_time(), loop.time()
        while loop.time() - t0 < seconds:
            started = loop.time()
            await asyncio.gather(*(one(c) for c in conns))
            checks += len(conns)
            took = loop.time() - started
            cycles.append(took)
            await asyncio.sleep(max(0.0, interval - took))
        cpu = time.process_time() - cpu0
        full_reads = sum(c.cheap.full_reads for c in conns if isinstance(c, _Conn)) - full_before
    finally:
        await asyncio.gather(*(_close(c) for c in conns))
    return {
        "variant": variant,
        "tablets": len(targets),
        "checks": checks,
        "failed": failed,
        "overruns": sum(1 for c in cycles if c > interval),
        "cpu_ms_per_check": round(cpu / checks * 1000, 4),
        "tablets_per_core_at_1hz": int(checks / cpu) if cpu else None,
        "p50_check_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_check_ms": round(percentile(latencies, 99) * 1000, 2),
        "full_reads_per_check": (
            round(full_reads / checks, 3) if variant.endswith(("cheap", "cheap-prepared")) else 1.0
        ),
    }


async def compare(
    targets: list[Target],
    variants: list[str],
    seconds: float,
    interval: float,
    concurrency: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    try:
        import aiomysql  # noqa: F401
    except ImportError:
        skipped = [v for v in variants if v.startswith("aiomysql")]
        if skipped:
            log(f"aiomysql is not installed (pip install -e '.[bench]'): skipping {skipped}")
        variants = [v for v in variants if not v.startswith("aiomysql")]
    log(
        f"{'variant':<24}{'cpu ms/check':>13}{'tablets/core':>14}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'full reads':>12}{'overruns':>10}{'failed':>8}"
    )
    out = []
    for variant in variants:
        r = await measure_variant(variant, targets, seconds, interval, concurrency)
        out.append(r)
        log(
            f"{variant:<24}{r['cpu_ms_per_check']:>13.4f}{r['tablets_per_core_at_1hz']:>14}"
            f"{r['p50_check_ms']:>9.2f}{r['p99_check_ms']:>9.2f}"
            f"{r['full_reads_per_check']:>12.3f}{r['overruns']:>10}{r['failed']:>8}"
        )
    return out
