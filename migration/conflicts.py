"""Naming both sides of a key conflict between merged shards.

When rows of two sources routed to one target table share a key, the second one to arrive
finds the first one's row. Overwriting it would silently lose a shard's row, so the subtask
pauses instead, with an error that names the table, the key, this source and the source(s) that
hold the same key upstream (looked up on the other sources now, so the person on call does not
have to).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from migration.context import SubtaskContext
from migration.errors import KeyConflictError
from migration.rows import key_literal, table_sql
from migration.schema import list_tables, qualified, quote
from migration.sources import resolve_source
from mysqlctl.session import Session

LOOKUP_TIMEOUT_S = 5.0


async def key_conflict(
    ctx: SubtaskContext,
    target: Session,
    tdb: str,
    ttable: str,
    key_columns: Sequence[str],
    keys: Sequence[tuple[object, ...]],
    detail: str,
) -> KeyConflictError:
    key_sql = ", ".join(quote(c) for c in key_columns)
    in_list = ", ".join(key_literal(target.escape, k) for k in keys[:10_000])
    found = await target.fetch_rows(
        f"SELECT {key_sql} FROM {table_sql(tdb, ttable)} WHERE ({key_sql}) IN ({in_list}) LIMIT 1"
    )
    key = tuple(found[0]) if found else (keys[0] if keys else ())
    shown = ", ".join(f"{c}={v!r}" for c, v in zip(key_columns, key, strict=False))
    owners: list[str] = []
    with contextlib.suppress(Exception):
        async with asyncio.timeout(LOOKUP_TIMEOUT_S):
            owners = await _holders(ctx, tdb, ttable, key_columns, key)
    others = owners or ["another writer of the target (not found on any other source)"]
    return KeyConflictError(
        f"key conflict in {tdb}.{ttable}: ({shown}) from source {ctx.source_id} is already "
        f"there, held upstream by {', '.join(others)}; the row was not overwritten "
        f"({detail})",
        table=f"{tdb}.{ttable}",
        key=shown,
        sources=[ctx.source_id, *owners],
    )


async def _holders(
    ctx: SubtaskContext,
    tdb: str,
    ttable: str,
    key_columns: Sequence[str],
    key: tuple[object, ...],
) -> list[str]:
    """`source (db.table)` for every other source whose table routed to the target holds
    `key`."""
    out = []
    for spec in ctx.spec.sources:
        if spec.source_id == ctx.source_id:
            continue
        server = await resolve_source(ctx.topo, ctx.mstore, spec)
        async with await ctx.server_session(server.host, server.port) as s:
            for db, table in await list_tables(s):
                if not ctx.spec.allows(db, table) or ctx.spec.route(db, table) != (tdb, ttable):
                    continue
                where = " AND ".join(f"{quote(c)} = %s" for c in key_columns)
                rows = await s.fetch_rows(
                    f"SELECT 1 FROM {qualified(db, table)} WHERE {where} LIMIT 1", key
                )
                if rows:
                    out.append(f"{spec.source_id} ({db}.{table})")
    return out
