"""The reparent journal: one row per promotion, written on the new primary.

The row proves two things. On the primary, that the promotion happened and at which position.
On each replica, that replication from the new primary really works end to end: a reparent is
only verified once the row has arrived there (:func:`wait_for_journal_entry`). The table is
created on demand by the same call that writes the first row, so the first promotion of a fresh
shard needs no set-up step; its creation replicates like any other statement.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from mysqlctl.client import MysqlClient, stalled_error
from mysqlctl.errors import MysqlError, MysqlServerError, ReplicationError, WaitTimeoutError
from mysqlctl.gtid import Position

__all__ = [
    "JournalEntry",
    "ensure_journal_table",
    "read_journal",
    "wait_for_journal_entry",
    "write_journal_entry",
]

_DATABASE = "_vt"
_TABLE = f"{_DATABASE}.reparent_journal"
_CREATE_DATABASE = f"CREATE DATABASE IF NOT EXISTS {_DATABASE}"
_CREATE_TABLE = f"""CREATE TABLE IF NOT EXISTS {_TABLE} (
  time_created_ns BIGINT UNSIGNED NOT NULL,
  action_name VARBINARY(250) NOT NULL,
  primary_alias VARBINARY(32) NOT NULL,
  replication_position VARBINARY(64000) DEFAULT NULL,
  PRIMARY KEY (time_created_ns)
) ENGINE=InnoDB"""
# "Unknown database" and "Table doesn't exist": the journal was never written on this shard.
_MISSING = frozenset({1049, 1146})
_POLL_INTERVAL_S = 0.015
# How often a wait for the row also reads the replica's replication status (two round trips)
# to notice replication that will never deliver it.
_STATUS_EVERY_S = 0.1


@dataclass(frozen=True)
class JournalEntry:
    """One promotion: when (ns since the epoch, also the row's key), which workflow, which
    tablet became primary, and its position (printed with the flavor prefix) at that moment."""

    time_created_ns: int
    action_name: str
    primary_alias: str
    replication_position: str | None


async def ensure_journal_table(client: MysqlClient) -> None:
    """Create ``_vt.reparent_journal`` if it is missing (idempotent)."""
    await client.execute(_CREATE_DATABASE, retry=True)
    await client.execute(_CREATE_TABLE, retry=True)


async def write_journal_entry(
    client: MysqlClient, action: str, primary_alias: str, position: Position | None
) -> JournalEntry:
    """Record a promotion on the new primary.

    The table is created only when the insert finds it missing (the first promotion of a
    shard): `CREATE ... IF NOT EXISTS` on every promotion would cost two round trips and, on
    MariaDB, two binlog events each time.
    """
    entry = JournalEntry(
        time_created_ns=time.time_ns(),
        action_name=action,
        primary_alias=primary_alias,
        replication_position=position.encode() if position is not None else None,
    )
    insert = (
        f"INSERT INTO {_TABLE}"
        " (time_created_ns, action_name, primary_alias, replication_position)"
        " VALUES (%s, %s, %s, %s)"
    )
    # Text arguments, as the columns are text.
    args = (entry.time_created_ns, entry.action_name, entry.primary_alias,
            entry.replication_position)  # fmt: skip
    try:
        await client.execute(insert, args)
    except MysqlServerError as exc:
        if exc.code not in _MISSING:
            raise
        await ensure_journal_table(client)
        await client.execute(insert, args)
    return entry


async def read_journal(client: MysqlClient, limit: int = 50) -> list[JournalEntry]:
    """The newest ``limit`` entries, newest first; empty if the table does not exist yet."""
    try:
        rows = await client.fetch_all(
            "SELECT time_created_ns, action_name, primary_alias, replication_position"
            f" FROM {_TABLE} ORDER BY time_created_ns DESC LIMIT %s",
            (int(limit),),
        )
    except MysqlServerError as exc:
        if exc.code in _MISSING:
            return []
        raise
    return [_entry(row) for row in rows]


async def wait_for_journal_entry(client: MysqlClient, time_created_ns: int, timeout: float) -> None:
    """Poll until the entry keyed ``time_created_ns`` exists on the server (it replicated).

    :class:`WaitTimeoutError` naming the server after ``timeout`` seconds, and sooner
    :class:`ReplicationError` (see :func:`~mysqlctl.client.stalled_error`) once the server's
    replication is seen stopped for good: a replica that holds GTIDs its new source never had
    (error 1236) would otherwise keep a reparent waiting for the whole timeout. Replication
    status is read only every ``_STATUS_EVERY_S``, as a row that arrives at once (the usual
    case) needs no status read at all.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    next_status = started + _STATUS_EVERY_S
    while True:
        if await _has_entry(client, time_created_ns, deadline - loop.time()):
            return
        now = loop.time()
        if now >= deadline:
            io_error, sql_error = await _replication_errors(client)
            raise WaitTimeoutError(
                f"{client.address}: journal entry {time_created_ns} did not arrive within"
                f" {timeout:g}s",
                address=client.address,
                io_error=io_error,
                sql_error=sql_error,
            )
        if now >= next_status:
            next_status = now + _STATUS_EVERY_S
            error = await _stalled(client, time_created_ns, deadline - now)
            # The row may have been applied between the read above and the status read.
            if error is not None and not await _has_entry(
                client, time_created_ns, deadline - loop.time()
            ):
                raise error
        await asyncio.sleep(_POLL_INTERVAL_S)


async def _has_entry(client: MysqlClient, time_created_ns: int, remaining: float) -> bool:
    try:
        row = await client.fetch_one(
            f"SELECT 1 AS found FROM {_TABLE} WHERE time_created_ns = %s",
            (int(time_created_ns),),
            timeout=max(0.05, min(client.params.query_timeout, remaining)),
        )
    except MysqlServerError as exc:
        if exc.code not in _MISSING:
            raise
        return False
    return row is not None


async def _stalled(
    client: MysqlClient, time_created_ns: int, remaining: float
) -> ReplicationError | None:
    """The error to fail the wait with if the server's replication cannot deliver the row.
    A status that cannot be read says nothing either way: the row reads decide."""
    try:
        status = await client.status(timeout=max(0.05, min(client.params.query_timeout, remaining)))
    except MysqlError:
        return None
    return stalled_error(client.address, status.replication, f"journal entry {time_created_ns}")


async def _replication_errors(client: MysqlClient) -> tuple[str, str]:
    """The replica's last IO/SQL errors, usually the reason a row did not arrive; best effort."""
    try:
        replication = await client.replication_status()
    except MysqlError:
        return "", ""
    if replication is None:
        return "", "not configured as a replica"
    return replication.last_io_error, replication.last_sql_error


def _entry(row: dict[str, Any]) -> JournalEntry:
    position = row["replication_position"]
    return JournalEntry(
        time_created_ns=int(row["time_created_ns"]),
        action_name=_text(row["action_name"]),
        primary_alias=_text(row["primary_alias"]),
        replication_position=_text(position) if position is not None else None,
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
