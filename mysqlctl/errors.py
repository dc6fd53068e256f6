"""The errors of mysqlctl: one root, one class per thing a caller reacts to differently.

Workflows decide on the class, not on a message: an unreachable server is a candidate for
emergency handling, a timed-out query is retried or reported, a replication error names the
server's own complaint. Every error that concerns one server carries its ``address``
("host:port") so that a log line or an API response says which tablet misbehaved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mysqlctl.gtid import Position

__all__ = [
    "MysqlError",
    "MysqlServerError",
    "MysqlTimeoutError",
    "MysqlUnreachableError",
    "ReplicationError",
    "UnsupportedFlavorError",
    "WaitTimeoutError",
]


class MysqlError(Exception):
    """Root of every error raised by mysqlctl.

    ``address`` is the server's "host:port" (``None`` when no single server is concerned) and
    ``code`` the MySQL error number when the server or the client library reported one.
    """

    def __init__(self, message: str, *, address: str | None = None, code: int | None = None):
        super().__init__(message)
        self.address = address
        self.code = code


class MysqlUnreachableError(MysqlError):
    """No usable connection: refused, no handshake within the connect timeout, or the
    connection was lost. The server may be dead, or merely unreachable from here."""


class MysqlTimeoutError(MysqlError):
    """A statement did not complete within its deadline; the connection was dropped (and the
    statement is killed on the next connection) so that a hung server never hangs the caller."""


class MysqlServerError(MysqlError):
    """The server answered with an error (bad SQL, access denied, read-only, ...); ``code`` is
    the server's error number, e.g. 1290 for a write refused by ``read_only``."""


class ReplicationError(MysqlError):
    """Replication could not be configured, started or waited for.

    ``io_error`` and ``sql_error`` hold the replica's ``Last_IO_Error`` / ``Last_SQL_Error`` when
    they were known, since those are usually the real reason.
    """

    def __init__(
        self,
        message: str,
        *,
        address: str | None = None,
        code: int | None = None,
        io_error: str = "",
        sql_error: str = "",
    ):
        details = "; ".join(
            f"{name}: {text}"
            for name, text in (("Last_IO_Error", io_error), ("Last_SQL_Error", sql_error))
            if text
        )
        super().__init__(
            f"{message} ({details})" if details else message, address=address, code=code
        )
        self.io_error = io_error
        self.sql_error = sql_error


class WaitTimeoutError(ReplicationError):
    """A server did not reach a position (or a journal row) in time.

    ``target`` is what was waited for and ``reached`` what the server had applied when the wait
    gave up (``None`` when it could not be read), so a caller can tell "slow" from "stuck".
    """

    def __init__(
        self,
        message: str,
        *,
        address: str | None = None,
        target: Position | None = None,
        reached: Position | None = None,
        io_error: str = "",
        sql_error: str = "",
    ):
        super().__init__(message, address=address, io_error=io_error, sql_error=sql_error)
        self.target = target
        self.reached = reached


class UnsupportedFlavorError(MysqlError):
    """The server is neither MariaDB >= 10.3 nor MySQL >= 8.0.23; ``version`` is what it said."""

    def __init__(self, message: str, *, address: str | None = None, version: str = ""):
        super().__init__(message, address=address)
        self.version = version
