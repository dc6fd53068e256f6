"""Upstream tables as the engine needs them: which exist, their columns and the key that orders
and identifies their rows, and the statement that creates them downstream.

Every table a task moves needs a primary key, or a unique key over NOT NULL columns: the load
copies in key order and resumes after the last key copied, and the sync finds the downstream row
of an UPDATE or DELETE by it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mysqlctl.session import Session


def quote(name: str) -> str:
    """A backquoted identifier."""
    return "`" + name.replace("`", "``") + "`"


def qualified(db: str, table: str) -> str:
    return f"{quote(db)}.{quote(table)}"


@dataclass(frozen=True)
class TableInfo:
    db: str
    table: str
    columns: tuple[str, ...]
    # The columns that identify a row (primary key, else the first NOT NULL unique key);
    # empty when the table has neither.
    key: tuple[str, ...]
    # information_schema DATA_TYPE of each column, lower case ("int", "varchar", "blob"...).
    types: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.db}.{self.table}"

    def key_positions(self) -> tuple[int, ...]:
        return tuple(self.columns.index(c) for c in self.key)


async def list_tables(session: Session) -> list[tuple[str, str]]:
    """Every base table of the server, (db, table), sorted."""
    rows = await session.fetch_rows(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
        "WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME"
    )
    return [(str(db), str(t)) for db, t in rows]


async def table_info(session: Session, db: str, table: str) -> TableInfo:
    columns = await session.fetch_rows(
        "SELECT COLUMN_NAME, IS_NULLABLE, DATA_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    names = tuple(str(c[0]) for c in columns)
    types = tuple(str(c[2]).lower() for c in columns)
    nullable = {str(c[0]) for c in columns if c[1] == "YES"}
    keys = await session.fetch_rows(
        "SELECT s.INDEX_NAME, s.COLUMN_NAME FROM information_schema.STATISTICS s "
        "WHERE s.TABLE_SCHEMA = %s AND s.TABLE_NAME = %s AND s.NON_UNIQUE = 0 "
        "ORDER BY s.INDEX_NAME = 'PRIMARY' DESC, s.INDEX_NAME, s.SEQ_IN_INDEX",
        (db, table),
    )
    by_index: dict[str, list[str]] = {}
    for index, col in keys:
        by_index.setdefault(str(index), []).append(str(col))
    key: tuple[str, ...] = ()
    for index, cols in by_index.items():
        if index == "PRIMARY" or not nullable.intersection(cols):
            key = tuple(cols)
            break
    return TableInfo(db, table, names, key, types)


async def show_create_table(session: Session, db: str, table: str) -> str:
    rows = await session.fetch_rows(f"SHOW CREATE TABLE {qualified(db, table)}")
    return str(rows[0][1])


_CREATE_HEAD = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(`(?:[^`]|``)+`|\S+)", re.I
)


def create_table_for_target(create_sql: str, target_db: str, target_table: str) -> str:
    """`SHOW CREATE TABLE` text, made to create the target table if it is not there yet."""
    m = _CREATE_HEAD.match(create_sql)
    if m is None:
        raise ValueError(f"not a CREATE TABLE statement: {create_sql[:80]!r}")
    head = f"CREATE TABLE IF NOT EXISTS {qualified(target_db, target_table)}"
    return head + create_sql[m.end() :]
