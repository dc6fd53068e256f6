"""Prepared statements executed back to back in one write (pipelining), over asyncmy.

A health check runs two argument-free prepared statements on every tablet every second. Sent
one after the other, each costs a write, a wake-up for its answer and a read; on a busy host
the writes are the largest part of a check's CPU (a loopback ``send`` also runs the server's
side of TCP). The MySQL protocol lets a client send the next command before the answer to the
previous one has arrived: the server reads its commands in order and answers each in turn. So
:func:`execute_pipelined` sends every ``COM_STMT_EXECUTE`` in one write and then reads the
answers in order, exactly as :meth:`asyncmy.connection.PreparedStatement.execute` reads one.

asyncmy has no public call for this; what it needs of the driver (a prepared statement's
``_execute_header``, the connection's ``_write_bytes``, ``_next_seq_id`` and ``_result``, and
``MySQLResult.read_binary``) is checked by :func:`pipelines`, and a connection without it gets
the statements one at a time (:func:`execute_each`), with the same results.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from asyncmy import errors as driver_errors
from asyncmy.connection import Connection, MySQLResult, PreparedStatement

Rows = list[dict[str, Any]]


def pipelines(conn: Connection) -> bool:
    """Whether this driver connection has what :func:`execute_pipelined` uses."""
    kind: Any = type(conn)  # (the driver's stub declares its instances unhashable)
    return _driver_pipelines(kind)


@functools.cache
def _driver_pipelines(connection_type: type) -> bool:
    """Once per connection class: a check asks for every tablet every second."""
    connection = ("_write_bytes", "_next_seq_id", "_result", "_connected")
    statement = ("_execute_header", "_complete_result")
    return (
        all(hasattr(connection_type, name) for name in connection)
        and all(hasattr(PreparedStatement, name) for name in statement)
        and hasattr(MySQLResult, "read_binary")
    )


def _packet(payload: bytes) -> bytes:
    """One ``COM_STMT_EXECUTE`` packet: 3-byte length, sequence id 0, command, payload."""
    return (len(payload) + 1).to_bytes(3, "little") + b"\x00\x17" + payload


def _rows(result: Any) -> Rows:
    names = [column[0] for column in result.description or ()]
    return [dict(zip(names, row, strict=True)) for row in result.rows or ()]


async def execute_each(statements: Sequence[PreparedStatement]) -> list[Rows]:
    """The statements one at a time: a round trip each."""
    return [_rows(await statement.execute()) for statement in statements]


async def execute_pipelined(
    conn: Connection, statements: Sequence[PreparedStatement]
) -> list[Rows]:
    """Execute argument-free prepared statements of ``conn`` in one write; their rows in order.

    If a statement fails, the answers to the others are still read (the connection stays in
    step with the server) and the first error is raised. An error while reading (the
    connection lost, a cancellation) leaves the stream in doubt: the driver closes the
    connection itself, as it does for a single statement.
    """
    raw: Any = conn  # the driver's stubs do not declare the internals used here
    previous = raw._result
    if len(statements) < 2 or (
        previous is not None and (previous.unbuffered_active or previous.has_next)
    ):
        return await execute_each(statements)
    headers: list[bytes] = [getattr(st, "_execute_header") for st in statements]  # noqa: B009
    raw._write_bytes(b"".join(_packet(header) for header in headers))
    results: list[Rows] = []
    error: driver_errors.Error | None = None
    for statement in statements:
        raw._next_seq_id = 1  # each answer is numbered from 1, after its command's 0
        result = MySQLResult(conn)
        raw_statement: Any = statement
        try:
            await result.read_binary(statement)
            await raw_statement._complete_result(conn, result)
        except driver_errors.Error as exc:
            if not raw._connected:
                raise
            error = error or exc
            results.append([])
            continue
        results.append(_rows(result))
    if error is not None:
        raise error
    return results
