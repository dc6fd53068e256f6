"""Row changes and the downstream SQL that applies them.

Both units write rows the same way: the load inserts chunks of rows it read, the sync applies row
events from the binlog. Statements are multi-row (one INSERT of hundreds of rows costs about as
much as one of a single row) and split so that none passes `MAX_STATEMENT_BYTES`.

Safe mode makes every statement idempotent, for replaying events whose effect may already be
downstream: INSERT becomes REPLACE, UPDATE becomes DELETE of the old key then REPLACE of the new
row, DELETE stays DELETE. Outside safe mode a plain INSERT that finds the key already there is an
error (a conflict between merged shards), never an overwrite.
"""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from migration.schema import quote

MAX_STATEMENT_BYTES = 4 << 20

INSERT, UPDATE, DELETE = "insert", "update", "delete"

Escape = Callable[[object], str]


@dataclass(slots=True)
class RowChange:
    """Rows of one binlog rows event, already routed to their target table.

    `rows` holds value tuples in `columns` order: one per row for insert and delete, and
    (before, after) pairs for update."""

    kind: str
    db: str
    table: str
    target_db: str
    target_table: str
    columns: tuple[str, ...]
    rows: list[Any]


@dataclass(slots=True)
class DdlChange:
    """A DDL statement as the source logged it, with its default schema."""

    schema: str
    query: str


@dataclass(slots=True)
class Transaction:
    """One whole source transaction: applied downstream whole, or not at all."""

    gtid: str
    # The source position once this transaction is applied (what the checkpoint records).
    position: str
    timestamp: int
    changes: list[RowChange | DdlChange] = field(default_factory=list)
    rows: int = 0

    @property
    def is_ddl(self) -> bool:
        return any(isinstance(c, DdlChange) for c in self.changes)


def plain_value(value: Any) -> Any:
    """A value as the binlog reader decoded it, in a form the driver can escape."""
    if isinstance(value, dict | list):
        return json.dumps(_json_keys(value))
    if isinstance(value, set | frozenset):
        return ",".join(sorted(value))
    return value


def _json_keys(value: Any) -> Any:
    """mysql-replication decodes the object keys of a MySQL JSON value as bytes."""
    if isinstance(value, dict):
        return {k.decode() if isinstance(k, bytes) else k: _json_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_keys(v) for v in value]
    return value


# Values the driver escapes as they are. Exact types, because a set lookup is several times
# cheaper than an isinstance() check against a union (this runs for every value copied); any
# other type, subclasses of these included, goes through `plain_value`, which returns it
# unchanged unless it is a JSON or SET value.
_PLAIN_TYPES = frozenset({int, str, bytes, float, decimal.Decimal, datetime.datetime, type(None)})


def _plain_row(row: Sequence[Any]) -> tuple[Any, ...]:
    plain = _PLAIN_TYPES
    return tuple(v if type(v) in plain else plain_value(v) for v in row)


def table_sql(db: str, table: str) -> str:
    return f"{quote(db)}.{quote(table)}"


def insert_statements(
    escape: Escape,
    target: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    replace: bool = False,
) -> list[str]:
    """INSERT (or REPLACE) statements for `rows`, each under MAX_STATEMENT_BYTES."""
    verb = "REPLACE" if replace else "INSERT"
    head = f"{verb} INTO {target} ({', '.join(quote(c) for c in columns)}) VALUES "
    return _split(head, (escape(_plain_row(r)) for r in rows), ",")


def insert_literal_statements(
    target: str, columns: Sequence[str], literals: Iterable[str]
) -> list[str]:
    """INSERT statements for rows given as SQL row-constructor literals, `(1,'a')`."""
    head = f"INSERT INTO {target} ({', '.join(quote(c) for c in columns)}) VALUES "
    return _split(head, literals, ",")


def delete_statements(
    escape: Escape, target: str, key_columns: Sequence[str], keys: Iterable[Sequence[Any]]
) -> list[str]:
    """DELETE statements removing the rows with these keys."""
    if len(key_columns) == 1:
        head = f"DELETE FROM {target} WHERE {quote(key_columns[0])} IN ("
        items = (escape(plain_value(k[0])) for k in keys)
    else:
        cols = ", ".join(quote(c) for c in key_columns)
        head = f"DELETE FROM {target} WHERE ({cols}) IN ("
        items = (escape(_plain_row(k)) for k in keys)
    return [s + ")" for s in _split(head, items, ",")]


def update_statement(
    escape: Escape,
    target: str,
    columns: Sequence[str],
    key_columns: Sequence[str],
    before_key: Sequence[Any],
    after: Sequence[Any],
) -> str:
    sets = ", ".join(
        f"{quote(c)} = {escape(plain_value(v))}" for c, v in zip(columns, after, strict=True)
    )
    where = " AND ".join(
        f"{quote(c)} = {escape(plain_value(v))}"
        for c, v in zip(key_columns, before_key, strict=True)
    )
    return f"UPDATE {target} SET {sets} WHERE {where}"


def key_of(row: Sequence[Any], positions: Sequence[int]) -> tuple[Any, ...]:
    return tuple(row[i] for i in positions)


def key_literal(escape: Escape, key: Sequence[Any]) -> str:
    """The key as an SQL row constructor literal, `(5)` or `(5, 'abc')` (load checkpoints)."""
    return escape(_plain_row(key))


def _bytes(text: str) -> int:
    """The size of `text` as sent (UTF-8), not its count of characters."""
    return len(text) if text.isascii() else len(text.encode())


def _split(head: str, items: Iterable[str], sep: str) -> list[str]:
    out: list[str] = []
    parts: list[str] = []
    size = _bytes(head)
    for item in items:
        n = _bytes(item)
        if parts and size + n + 1 > MAX_STATEMENT_BYTES:
            out.append(head + sep.join(parts))
            parts, size = [], _bytes(head)
        parts.append(item)
        size += n + 1
    if parts:
        out.append(head + sep.join(parts))
    return out


@dataclass
class KeyedTable:
    """A target table's columns and key, for turning row changes into statements."""

    target: str
    key: tuple[str, ...]


def change_statements(
    escape: Escape,
    changes: Iterable[RowChange],
    keys: Callable[[str, str], tuple[str, ...]],
    *,
    safe_mode: bool,
) -> list[tuple[str, RowChange]]:
    """Statements applying `changes` in order, consecutive ones of one kind and table merged
    into multi-row statements; each paired with the change it came from (for error reports).
    `keys(target_db, target_table)` gives the table's key columns."""
    out: list[tuple[str, RowChange]] = []
    group: list[RowChange] = []

    def flush() -> None:
        if not group:
            return
        first = group[0]
        target = table_sql(first.target_db, first.target_table)
        key = keys(first.target_db, first.target_table)
        positions = [first.columns.index(c) for c in key]
        if first.kind == INSERT:
            rows = [r for c in group for r in c.rows]
            out.extend((s, first) for s in insert_statements(
                escape, target, first.columns, rows, replace=safe_mode))  # fmt: skip
        elif first.kind == DELETE:
            ks = [key_of(r, positions) for c in group for r in c.rows]
            out.extend((s, first) for s in delete_statements(escape, target, key, ks))
        else:
            for c in group:
                for before, after in c.rows:
                    if safe_mode:
                        for s in delete_statements(
                            escape, target, key, [key_of(before, positions)]
                        ):
                            out.append((s, c))
                        for s in insert_statements(
                            escape, target, c.columns, [after], replace=True
                        ):
                            out.append((s, c))
                    else:
                        out.append((update_statement(
                            escape, target, c.columns, key, key_of(before, positions), after), c))  # fmt: skip
        group.clear()

    for change in changes:
        if group and (
            change.kind != group[0].kind
            or change.kind == UPDATE
            or (change.target_db, change.target_table, change.columns)
            != (group[0].target_db, group[0].target_table, group[0].columns)
        ):
            flush()
        group.append(change)
    flush()
    return out
