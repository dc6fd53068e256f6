"""The load unit: copy every migrated table of one source into the target, resumably.

Steps:

1. Open a consistent snapshot on the source and read its GTID position (`migration.snapshot`).
2. List the tables the task migrates (block-allow-list, routes) and their keys.
3. Create the target schemas and tables from the source's definitions, if not there yet (a
   merged table is created once, by whichever source gets there first).
4. Record the load as started: the sync will begin at this first snapshot's position.
5. Copy each table in key order, one chunk per downstream transaction: the fence on our
   checkpoint row, the chunk's rows (a plain INSERT: a key already there is a conflict with
   another shard, never overwritten), and the table's progress row. A restarted load skips the
   tables done and resumes each other one after its last key.
6. Record the load as done, with the position of the newest snapshot any chunk was read in as
   the safe-mode exit point: the sync replays from the first snapshot's position in safe mode
   until it has passed that one, so rows copied by a later snapshot are never lost or
   duplicated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from migration.aio import cancel_and_wait
from migration.checkpoint import LOAD_DONE, LOAD_NEW, LOAD_RUNNING, Checkpoint, TableProgress
from migration.conflicts import key_conflict
from migration.context import Stopping, SubtaskContext
from migration.errors import KeyConflictError, PausingError
from migration.rows import (
    Escape,
    insert_literal_statements,
    insert_statements,
    key_literal,
    table_sql,
)
from migration.schema import (
    TableInfo,
    create_table_for_target,
    list_tables,
    qualified,
    quote,
    show_create_table,
    table_info,
)
from migration.snapshot import open_snapshot
from migration.sources import SourceServer
from mysqlctl.errors import MysqlServerError
from mysqlctl.session import Session

DUPLICATE_KEY = 1062


async def run_load(
    ctx: SubtaskContext, target: Session, server: SourceServer, cp: Checkpoint
) -> Checkpoint:
    """Load everything not loaded yet; returns the checkpoint with the load done."""
    ctx.report(unit="Load", source_address=server.address)
    async with await ctx.server_session(server.host, server.port) as src:
        # 1. snapshot
        _flavor, snapshot = await open_snapshot(src)
        ctx.log.info("load snapshot opened", server=server.describe(), gtid=snapshot)
        # 2. tables
        tables = await migrated_tables(ctx, src)
        # 3. target tables
        await create_target_tables(ctx, src, target, tables)
        # 4. started
        if cp.load_state == LOAD_NEW:
            cp = await ctx.checkpoints.move(
                target, cp, gtid=snapshot, safe_mode_until=snapshot, load_state=LOAD_RUNNING
            )
        # 5. copy
        progress = await ctx.checkpoints.table_progress(target, ctx.source_id)
        total = sum(p.rows for p in progress.values())
        estimate = await _estimate_rows(src, tables) or 1
        started, copied = time.monotonic(), 0
        for info in tables:
            p = progress.get((info.db, info.table)) or TableProgress(
                info.db, info.table, None, 0, False, snapshot
            )
            if p.done:
                continue

            def copied_chunk(n: int, info: TableInfo = info) -> None:
                nonlocal total, copied
                total, copied = total + n, copied + n
                rate = copied / max(time.monotonic() - started, 1e-3)
                ctx.report(load={
                    "progress": f"{min(100.0, 100.0 * total / estimate):.2f} %",
                    "rows": total, "estimatedRows": estimate, "rowsPerSecond": round(rate),
                    "table": info.name,
                })  # fmt: skip

            cp = await _copy_table(ctx, src, target, cp, info, p, snapshot, copied_chunk)
        # 6. done
        cp = await ctx.checkpoints.move(target, cp, load_state=LOAD_DONE)
        ctx.report(
            load={
                "progress": "100.00 %",
                "rows": total,
                "state": LOAD_DONE,
                "safeModeUntil": cp.safe_mode_until,
            }
        )
        ctx.log.info("load done", rows=total, sync_from=cp.gtid, safe_mode_until=cp.safe_mode_until)
        await src.rollback()
    return cp


async def migrated_tables(ctx: SubtaskContext, src: Session) -> list[TableInfo]:
    """The source's tables this task moves, with their keys; a table without a key pauses."""
    out = []
    for db, table in await list_tables(src):
        if not ctx.spec.allows(db, table):
            continue
        info = await table_info(src, db, table)
        if not info.key:
            raise PausingError(
                f"{db}.{table} on {ctx.source_id} has no primary key or NOT NULL unique key"
            )
        out.append(info)
    return out


async def create_target_tables(
    ctx: SubtaskContext, src: Session, target: Session, tables: list[TableInfo]
) -> None:
    made: set[tuple[str, str]] = set()
    for info in tables:
        tdb, ttable = ctx.spec.route(info.db, info.table)
        if (tdb, ttable) in made:
            continue
        made.add((tdb, ttable))
        create = await show_create_table(src, info.db, info.table)
        await target.execute(f"CREATE DATABASE IF NOT EXISTS {quote(tdb)}")
        await target.execute(create_table_for_target(create, tdb, ttable))


async def _estimate_rows(src: Session, tables: list[TableInfo]) -> int:
    total = 0
    for info in tables:
        rows = await src.fetch_rows(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s",
            (info.db, info.table),
        )
        total += int(rows[0][0] or 0) if rows else 0
    return total


# How the source server itself prints a column's value as an exact SQL literal, by type, so
# that a chunk crosses the client as one string per row instead of being decoded into Python
# values and escaped again (measured: most of the load's CPU). A DOUBLE prints as its shortest
# exact decimal form, a FLOAT exactly once widened to DOUBLE (its own 6-digit form loses bits:
# checked on MariaDB 10.11, 600 random values each). Types without an exact text form here
# (BIT, JSON, spatial types) keep the decoding path.
_NUMERIC = frozenset({
    "tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "year", "double",
})  # fmt: skip
_TEXTUAL = frozenset({
    "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set", "date",
    "datetime", "timestamp", "time",
})  # fmt: skip
_BINARY = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})


def _literal_sql(column: str, data_type: str) -> str | None:
    c = quote(column)
    if data_type in _NUMERIC:
        return f"COALESCE(CONCAT({c}), 'NULL')"
    if data_type == "float":
        return f"COALESCE(CONCAT(CAST({c} AS DOUBLE)), 'NULL')"
    if data_type in _TEXTUAL:
        return f"COALESCE(QUOTE({c}), 'NULL')"
    if data_type in _BINARY:
        return f"IF({c} IS NULL, 'NULL', CONCAT('X''', HEX({c}), ''''))"
    return None


def server_literals(info: TableInfo) -> tuple[str, str] | None:
    """(row literal, key literal) expressions for the whole row and its key, or None when a
    column has no exact server-side literal."""
    parts = [_literal_sql(c, t) for c, t in zip(info.columns, info.types, strict=True)]
    if not info.types or any(p is None for p in parts):
        return None
    by_name = dict(zip(info.columns, parts, strict=True))

    def row(exprs: list[str | None]) -> str:
        return "CONCAT('(', " + ", ',', ".join(e for e in exprs if e) + ", ')')"

    return row(parts), row([by_name[k] for k in info.key])


@dataclass
class _Chunk:
    """Rows read for one chunk: the INSERT statements that write them, how many, and the key
    literal of the last one (where the next chunk starts)."""

    statements: list[str]
    n: int
    last: str | None
    # The same rows as values, to name a key conflict (read again only then).
    values_sql: str


async def _read_chunk(
    ctx: SubtaskContext, src: Session, escape: Escape, info: TableInfo, after: str | None
) -> _Chunk:
    cols = ", ".join(quote(c) for c in info.columns)
    key = ", ".join(quote(c) for c in info.key)
    where = f" WHERE ({key}) > {after}" if after else ""
    limit = int(ctx.spec.chunk_rows)
    tail = f" FROM {qualified(info.db, info.table)}{where} ORDER BY {key} LIMIT {limit}"
    target_sql = table_sql(*ctx.spec.route(info.db, info.table))
    fast = server_literals(info)
    if fast is not None:
        literals = await src.fetch_rows(f"SELECT {fast[0]}, {fast[1]}{tail}", timeout=600)
        statements = insert_literal_statements(
            target_sql, info.columns, (str(r[0]) for r in literals)
        )
        last = str(literals[-1][1]) if literals else None
        return _Chunk(statements, len(literals), last, f"SELECT {cols}{tail}")
    rows = await src.fetch_rows(f"SELECT {cols}{tail}", timeout=600)
    last = key_literal(escape, tuple(rows[-1][i] for i in info.key_positions())) if rows else None
    statements = insert_statements(escape, target_sql, info.columns, rows)
    return _Chunk(statements, len(rows), last, f"SELECT {cols}{tail}")


async def _copy_table(
    ctx: SubtaskContext,
    src: Session,
    target: Session,
    cp: Checkpoint,
    info: TableInfo,
    p: TableProgress,
    snapshot: str,
    on_chunk: Callable[[int], None],
) -> Checkpoint:
    """Every chunk of one table not copied yet. The next chunk is read from the source while
    the current one is written to the target (the two servers work at the same time)."""
    chunk = await _read_chunk(ctx, src, target.escape, info, p.last_key)
    while True:
        if chunk.n == 0:
            done = TableProgress(info.db, info.table, p.last_key, p.rows, True, snapshot)
            cp = await _write_chunk(ctx, target, cp, chunk, done, snapshot)
            return cp
        ahead = asyncio.create_task(_read_chunk(ctx, src, target.escape, info, chunk.last))
        try:
            p = TableProgress(info.db, info.table, chunk.last, p.rows + chunk.n, False, snapshot)
            cp = await _write_chunk(ctx, target, cp, chunk, p, snapshot)
        except _Duplicate as d:
            await asyncio.wait({ahead})  # the source session is free again
            rows = await src.fetch_rows(chunk.values_sql, timeout=600)
            raise await _conflict(ctx, target, info, rows, d.error) from d.error
        except BaseException:
            await cancel_and_wait(ahead)
            raise
        on_chunk(chunk.n)
        if ctx.stopping.is_set():  # the worker drains: this chunk is committed, stop here
            await cancel_and_wait(ahead)
            raise Stopping()
        chunk = await ahead


class _Duplicate(Exception):
    def __init__(self, error: MysqlServerError) -> None:
        super().__init__(str(error))
        self.error = error


async def _write_chunk(
    ctx: SubtaskContext,
    target: Session,
    cp: Checkpoint,
    chunk: _Chunk,
    progress: TableProgress,
    snapshot: str,
) -> Checkpoint:
    """One chunk in one downstream transaction with the fence and the table's progress row."""
    statements = chunk.statements
    await target.begin()
    try:
        cp = await ctx.checkpoints.fence(target, cp, safe_mode_until=snapshot)
        half = len(statements) // 2
        for i, sql in enumerate(statements):
            if i == half and len(statements) > 1:
                await ctx.faults.hit("load.mid_chunk")
            try:
                await target.execute(sql, timeout=600)
            except MysqlServerError as e:
                if e.code == DUPLICATE_KEY:
                    raise _Duplicate(e) from e
                raise
        if len(statements) == 1:
            await ctx.faults.hit("load.mid_chunk")
        await ctx.faults.hit("load.before_checkpoint")
        await ctx.checkpoints.save_table_progress(target, ctx.source_id, progress)
        await target.commit()
    except BaseException:
        await target.rollback()
        raise
    await ctx.faults.hit("load.after_chunk")
    return cp


async def _conflict(
    ctx: SubtaskContext,
    target: Session,
    info: TableInfo,
    rows: list[tuple[object, ...]],
    error: MysqlServerError,
) -> KeyConflictError:
    """The chunk hit rows already downstream: name the key (after rolling back our chunk,
    the rows found are another source's)."""
    await target.rollback()
    tdb, ttable = ctx.spec.route(info.db, info.table)
    positions = info.key_positions()
    keys = [tuple(r[i] for i in positions) for r in rows]
    return await key_conflict(ctx, target, tdb, ttable, info.key, keys, str(error))
