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

import time

from migration.checkpoint import LOAD_DONE, LOAD_NEW, LOAD_RUNNING, Checkpoint, TableProgress
from migration.conflicts import key_conflict
from migration.context import SubtaskContext
from migration.errors import KeyConflictError, PausingError
from migration.rows import insert_statements, key_literal, table_sql
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
            while not p.done:
                cp, p, n = await _copy_chunk(ctx, src, target, cp, info, p, snapshot)
                total, copied = total + n, copied + n
                rate = copied / max(time.monotonic() - started, 1e-3)
                ctx.report(load={
                    "progress": f"{min(100.0, 100.0 * total / estimate):.2f} %",
                    "rows": total, "estimatedRows": estimate, "rowsPerSecond": round(rate),
                    "table": info.name,
                })  # fmt: skip
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


async def _copy_chunk(
    ctx: SubtaskContext,
    src: Session,
    target: Session,
    cp: Checkpoint,
    info: TableInfo,
    p: TableProgress,
    snapshot: str,
) -> tuple[Checkpoint, TableProgress, int]:
    """One chunk in one downstream transaction; returns the new state and rows copied."""
    cols = ", ".join(quote(c) for c in info.columns)
    key = ", ".join(quote(c) for c in info.key)
    after = f" WHERE ({key}) > {p.last_key}" if p.last_key else ""
    rows = await src.fetch_rows(
        f"SELECT {cols} FROM {qualified(info.db, info.table)}{after} ORDER BY {key} "
        f"LIMIT {int(ctx.spec.chunk_rows)}",
        timeout=600,
    )
    tdb, ttable = ctx.spec.route(info.db, info.table)
    positions = info.key_positions()
    if rows:
        last = key_literal(target.escape, tuple(rows[-1][i] for i in positions))
        new_p = TableProgress(info.db, info.table, last, p.rows + len(rows), False, snapshot)
    else:
        new_p = TableProgress(info.db, info.table, p.last_key, p.rows, True, snapshot)
    statements = insert_statements(target.escape, table_sql(tdb, ttable), info.columns, rows)
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
                    raise await _conflict(ctx, target, info, tdb, ttable, rows, e) from e
                raise
        if len(statements) == 1:
            await ctx.faults.hit("load.mid_chunk")
        await ctx.faults.hit("load.before_checkpoint")
        await ctx.checkpoints.save_table_progress(target, ctx.source_id, new_p)
        await target.commit()
    except BaseException:
        await target.rollback()
        raise
    await ctx.faults.hit("load.after_chunk")
    return cp, new_p, len(rows)


async def _conflict(
    ctx: SubtaskContext,
    target: Session,
    info: TableInfo,
    tdb: str,
    ttable: str,
    rows: list[tuple[object, ...]],
    error: MysqlServerError,
) -> KeyConflictError:
    """The chunk hit rows already downstream: name the key (after rolling back our chunk,
    the rows found are another source's)."""
    await target.rollback()
    positions = info.key_positions()
    keys = [tuple(r[i] for i in positions) for r in rows]
    return await key_conflict(ctx, target, tdb, ttable, info.key, keys, str(error))
