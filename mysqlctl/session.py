"""A dedicated connection for work that spans several statements.

:class:`~mysqlctl.client.MysqlClient` shares one autocommit connection between short control
statements. Some work needs a connection of its own for longer: a transaction that must commit
several statements together (a migration batch and its checkpoint row), a consistent snapshot
read in chunks over minutes, a binlog applier that keeps its connection between batches. A
:class:`Session` is that connection, with the same guarantees as the client: every call has a
deadline, and every driver failure becomes a typed :mod:`mysqlctl.errors` error naming the
server. A session is never reconnected behind the caller's back: the transaction or snapshot it
held is gone with the connection, and only the caller knows how to start over.

Rows come back as tuples (``fetch_rows``), which is several times cheaper than dicts when a
chunk of thousands of rows is copied, or as dicts (``fetch_all``) for small reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from asyncmy import errors as driver_errors
from asyncmy.cursors import Cursor

from mysqlctl.client import MysqlParams, open_connection, translate_error
from mysqlctl.errors import MysqlError, MysqlTimeoutError, MysqlUnreachableError

__all__ = ["Session", "open_session"]


class _QuietCursor(Cursor):
    """Tuples, and no extra round trip to fetch warnings (see mysqlctl.client._Cursor)."""

    async def _show_warnings(self, conn: Any) -> None:
        return None


async def open_session(
    params: MysqlParams, *, autocommit: bool = True, database: str | None = None
) -> Session:
    """Connect (within ``params.connect_timeout``) and return the session."""
    conn = await open_connection(
        params, cursorclass=_QuietCursor, autocommit=autocommit, database=database
    )
    return Session(params, conn)


class Session:
    """One connection of the caller's own; see the module docstring. Not safe for concurrent
    use by several tasks (a connection runs one statement at a time)."""

    def __init__(self, params: MysqlParams, conn: Any) -> None:
        self._params = params
        self._conn: Any = conn

    @property
    def address(self) -> str:
        return self._params.address

    @property
    def closed(self) -> bool:
        return self._conn is None or not self._conn.connected

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or not conn.connected:
            return
        try:
            async with asyncio.timeout(1.0):
                await conn.ensure_closed()
        except BaseException:
            conn.close()

    # -- statements ----------------------------------------------------------------------

    async def execute(
        self, sql: str, args: Sequence[object] | None = None, *, timeout: float | None = None
    ) -> int:
        """Run one statement; the affected row count."""

        async def work(cursor: Any) -> int:
            return int(await cursor.execute(self._sql(sql, args)))

        return await self._run(work, timeout)

    async def fetch_rows(
        self, sql: str, args: Sequence[object] | None = None, *, timeout: float | None = None
    ) -> list[tuple[Any, ...]]:
        """Run a query; its rows as tuples."""

        async def work(cursor: Any) -> list[tuple[Any, ...]]:
            await cursor.execute(self._sql(sql, args))
            return list(await cursor.fetchall())

        return await self._run(work, timeout)

    async def fetch_all(
        self, sql: str, args: Sequence[object] | None = None, *, timeout: float | None = None
    ) -> list[dict[str, Any]]:
        """Run a query; its rows as dicts (column name -> value)."""

        async def work(cursor: Any) -> list[dict[str, Any]]:
            await cursor.execute(self._sql(sql, args))
            names = [d[0] for d in cursor.description or ()]
            return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

        return await self._run(work, timeout)

    async def begin(self, *, timeout: float | None = None) -> None:
        await self.execute("BEGIN", timeout=timeout)

    async def commit(self, *, timeout: float | None = None) -> None:
        await self.execute("COMMIT", timeout=timeout)

    async def rollback(self) -> None:
        """Roll back; a connection that cannot is closed (the server rolls back then)."""
        if self.closed:
            return
        try:
            await self.execute("ROLLBACK", timeout=2.0)
        except MysqlError:
            await self.close()

    def escape(self, value: object) -> str:
        """``value`` as an SQL literal in this connection's character set; a tuple or list
        becomes a row constructor ``(a, b)``, bytes a hex literal ``X'00ff'`` (independent of
        the connection's character set, which the driver's quoting of bytes depends on)."""
        assert self._conn is not None
        if isinstance(value, tuple | list):
            item = self._literal
            return "(" + ",".join(item(v) for v in value) + ")"
        return self._literal(value)

    def _literal(self, value: object) -> str:
        if isinstance(value, bytes | bytearray | memoryview):
            return "X'" + bytes(value).hex() + "'"
        return str(self._conn.escape(value))

    def _sql(self, sql: str, args: Sequence[object] | None) -> str:
        """The statement with its arguments in place (as the driver would, with our
        escaping)."""
        return sql if args is None else sql % tuple(self._literal(a) for a in args)

    async def _run(self, work: Any, timeout: float | None) -> Any:
        if self._conn is None or not self._conn.connected:
            raise MysqlUnreachableError(
                f"{self.address}: the session's connection is closed", address=self.address
            )
        limit = self._params.query_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                async with self._conn.cursor() as cursor:
                    return await work(cursor)
        except TimeoutError:
            self._abandon()
            raise MysqlTimeoutError(
                f"{self.address}: no answer within {limit:g}s", address=self.address
            ) from None
        except driver_errors.Error as exc:
            error = translate_error(exc, self.address)
            if isinstance(error, MysqlUnreachableError):
                self._abandon()
            raise error from exc
        except OSError as exc:
            self._abandon()
            raise MysqlUnreachableError(
                f"{self.address}: connection lost: {exc}", address=self.address
            ) from exc
        except BaseException:
            # Cancelled mid-statement: the protocol state is unknown.
            self._abandon()
            raise

    def _abandon(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
