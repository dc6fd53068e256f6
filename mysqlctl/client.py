"""One MySQL/MariaDB server, as the orchestrator sees it: a connection and the replication
operations built on it.

A :class:`MysqlClient` keeps one connection open and reuses it: a planned reparent sends a few
dozen statements to a handful of servers, and reconnecting each time would cost more than the
statements. Use of that connection is serialized with an ``asyncio.Lock``. Waits that can last
many seconds (``MASTER_GTID_WAIT``) run on a connection of their own, so a health check sharing
the client is never stuck behind them.

Nothing here may hang the caller: connecting is bounded by ``connect_timeout`` and every call by
``query_timeout`` (or the call's own ``timeout``). A statement that runs over its deadline costs
the connection (its state is unknown); the next call reconnects and first kills the abandoned
statement on the server. A lost connection is re-established once, transparently, for reads and
idempotent control statements; any other failure becomes a typed :mod:`mysqlctl.errors` error
naming the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from asyncmy import errors as driver_errors
from asyncmy.connection import Connection as DriverConnection
from asyncmy.cursors import DictCursor

from mysqlctl import pipeline
from mysqlctl.errors import (
    MysqlError,
    MysqlServerError,
    MysqlTimeoutError,
    MysqlUnreachableError,
    ReplicationError,
    WaitTimeoutError,
)
from mysqlctl.flavor import Flavor, ReplicationStatus, ServerStatus, Statement, detect_flavor
from mysqlctl.gtid import GtidParseError, Position

__all__ = ["MysqlClient", "MysqlParams", "ReplicationStatus", "ServerStatus", "stalled_error"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = Any  # the driver's Connection is a Cython class; its stubs are partial
Work = Callable[[Connection, Flavor], Awaitable[T]]

# Client-side error numbers that mean "this connection is gone", plus the server's own
# "shutdown in progress" (1053) and MariaDB's "connection was killed" (1927).
_LOST_CONNECTION_CODES = frozenset({2002, 2003, 2006, 2013, 2055, 1053, 1927})
_UNKNOWN_THREAD = 1094
# Marks a status statement the server would not prepare: it runs in the text protocol.
_TEXT_PROTOCOL = object()
# Extra time granted to a client-side deadline around a server-side wait, so that the server's
# own timeout (which gives a clean answer) fires first.
_WAIT_GRACE_S = 1.0
_POLL_INTERVAL_S = 0.01
# How often a wait for a position reads the replication status to notice that replication
# stopped for good (the wait itself runs on the server and would not notice).
_STALL_CHECK_S = 0.1
# How long setting read_only=ON may take before commits stuck waiting for a semi-sync ACK are
# killed (see MysqlClient.set_read_only).
_FENCE_TRY_S = 1.0
# A semi-sync primary waits this long (ms) for an ACK before falling back to asynchronous
# replication: in effect never. Falling back would let a primary cut off from its replicas
# acknowledge writes that no replica has, which a failover then loses.
SEMI_SYNC_PRIMARY_TIMEOUT_MS = 10_000_000


class _Cursor(DictCursor):
    """Rows as dicts, and server warnings left alone: the driver would fetch them with an extra
    round trip and log each one (e.g. "Slave already has been stopped" on every idempotent STOP
    SLAVE), which is noise for a control plane."""

    async def _show_warnings(self, conn: Any) -> None:
        return None


@dataclass(frozen=True)
class MysqlParams:
    """Where and as whom to connect. Timeouts are short: a control plane must learn quickly
    that a server does not answer."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    connect_timeout: float = 1.0
    query_timeout: float = 5.0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class MysqlClient:
    """Talks to one server. Create it, ``await connect()`` (or use ``async with``), call the
    operations, ``await close()``. Connecting lazily on first use also works.

    The flavor (MariaDB or MySQL 8) is detected from ``SELECT @@version`` on each new connection.
    """

    def __init__(self, params: MysqlParams):
        self._params = params
        self._lock = asyncio.Lock()
        self._conn: Connection | None = None
        self._flavor: Flavor | None = None
        # Server thread ids of connections abandoned mid-statement: killed on the next connect.
        self._to_kill: list[int] = []
        # The status statements prepared on the shared connection (see status()).
        self._prepared: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"MysqlClient({self.address})"

    @property
    def params(self) -> MysqlParams:
        return self._params

    @property
    def address(self) -> str:
        """ "host:port", the name every error and log line uses for this server."""
        return self._params.address

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- connection management ---------------------------------------------------------------

    async def connect(self) -> None:
        """Open the shared connection now, so that errors (unreachable, access denied,
        unsupported flavor) show up here rather than on the first operation."""
        await self._run(_noop, timeout=None, retry=False)

    async def close(self) -> None:
        """Close the shared connection. Never waits on a server: if the connection is busy or
        the server does not answer the goodbye quickly, the socket is simply closed."""
        conn, self._conn = self._conn, None
        self._prepared = {}
        if conn is None or not conn.connected:
            return
        if self._lock.locked():
            conn.close()
            return
        await self._quit(conn)

    async def flavor(self) -> Flavor:
        """The server's flavor, connecting first if needed."""
        if self._flavor is None:
            await self.connect()
        assert self._flavor is not None
        return self._flavor

    # -- plain statements ---------------------------------------------------------------------

    async def execute(
        self,
        sql: str,
        args: Sequence[object] | None = None,
        *,
        timeout: float | None = None,
        retry: bool = False,
    ) -> int:
        """Run one statement and return the affected row count.

        Not retried on a lost connection unless ``retry`` says the statement is idempotent: the
        server may have executed it before the connection broke.
        """

        async def work(conn: Connection, flavor: Flavor) -> int:
            async with conn.cursor() as cursor:
                return int(await cursor.execute(sql, _args(args)))

        return await self._run(work, timeout=timeout, retry=retry)

    async def fetch_all(
        self,
        sql: str,
        args: Sequence[object] | None = None,
        *,
        timeout: float | None = None,
        retry: bool = True,
    ) -> list[dict[str, Any]]:
        """Run a query and return its rows as dicts (column name -> value). Reads are retried
        once on a lost connection; pass ``retry=False`` for a query with side effects."""

        async def work(conn: Connection, flavor: Flavor) -> list[dict[str, Any]]:
            return await _fetch(conn, Statement(sql, _args(args)))

        return await self._run(work, timeout=timeout, retry=retry)

    async def fetch_one(
        self,
        sql: str,
        args: Sequence[object] | None = None,
        *,
        timeout: float | None = None,
        retry: bool = True,
    ) -> dict[str, Any] | None:
        """The first row of a query, or ``None`` if it returned none."""
        rows = await self.fetch_all(sql, args, timeout=timeout, retry=retry)
        return rows[0] if rows else None

    # -- status -------------------------------------------------------------------------------

    async def status(self, *, timeout: float | None = None) -> ServerStatus:
        """One snapshot: the flavor's status statements in order, sent together in one write
        (a last round trip only when errant GTIDs need confirming, see
        :meth:`Flavor.recheck_errant`).

        Health checks call this for every tablet every second, so its cost bounds how many
        tablets one process checks. Each statement is prepared once per connection and then
        executed in the binary protocol: the driver recognises the column definitions it parsed
        at the first execution and reuses them, where the text protocol had it parse all 54 of
        ``SHOW SLAVE STATUS`` on every check (most of a check's CPU). The executions are
        pipelined (:mod:`mysqlctl.pipeline`): one write instead of one per statement, the
        largest part of what a check cost after that. Every execution still reads the server's
        current state; nothing is cached but the columns' descriptions.
        """

        async def work(conn: Connection, flavor: Flavor) -> ServerStatus:
            results = await self._fetch_prepared_all(conn, flavor.status_queries())
            snapshot = flavor.parse_status(results)
            if not snapshot.errant.is_empty():
                rows = await _fetch(conn, flavor.applied_position())
                snapshot = flavor.recheck_errant(snapshot, rows[0])
            return snapshot

        return await self._run(work, timeout=timeout, retry=True)

    async def primary_position(self, *, timeout: float | None = None) -> Position:
        """Everything the server executed (``gtid_binlog_pos`` / ``gtid_executed``)."""
        return await self._read_position(lambda flavor: flavor.primary_position(), timeout)

    async def _read_position(
        self, statement: Callable[[Flavor], Statement], timeout: float | None
    ) -> Position:
        """One of the flavor's position reads (``statement`` picks which), parsed."""

        async def work(conn: Connection, flavor: Flavor) -> Position:
            rows = await _fetch(conn, statement(flavor))
            return flavor.parse_position(rows[0]["position"])

        return await self._run(work, timeout=timeout, retry=True)

    async def replication_status(self, *, timeout: float | None = None) -> ReplicationStatus | None:
        """The replica side of :meth:`status`; ``None`` if not configured as a replica."""
        return (await self.status(timeout=timeout)).replication

    # -- fencing, promotion -------------------------------------------------------------------

    async def set_read_only(self, on: bool, *, timeout: float | None = None) -> None:
        """Fence or unfence writes (MySQL 8: ``super_read_only`` too).

        Turning it on waits for the commits in flight, and a pending fence holds new commits
        back. A commit waiting for a semi-sync acknowledgement that cannot come (a primary cut
        off from its replicas) would hold the fence back for as long as the semi-sync timeout:
        if the fence has not taken after a second, the sessions waiting for an ACK are killed,
        from a connection of their own, until it takes. Their clients get an error, never an
        acknowledgement, so nothing acknowledged is lost.
        """
        flavor = await self.flavor()
        if not on:
            await self._execute_all(flavor.set_read_only(False), timeout=timeout)
            return
        limit = timeout if timeout is not None else self._params.query_timeout
        fence = asyncio.create_task(self._execute_all(flavor.set_read_only(True), timeout=limit))
        try:
            await asyncio.wait({fence}, timeout=min(limit, _FENCE_TRY_S))
            while not fence.done():
                with contextlib.suppress(MysqlError):
                    await self._kill_semi_sync_waiters(timeout=_FENCE_TRY_S)
                await asyncio.wait({fence}, timeout=0.1)
            fence.result()
        finally:
            if not fence.done():
                fence.cancel()
                with contextlib.suppress(BaseException):
                    await fence

    async def _kill_semi_sync_waiters(self, *, timeout: float) -> None:
        """Kill the sessions stuck waiting for a semi-sync ACK (on a dedicated connection: the
        shared one is busy with the fence they hold back)."""

        async def work(conn: Connection, flavor: Flavor) -> None:
            async with conn.cursor() as cursor:
                await cursor.execute(
                    "SELECT id FROM information_schema.processlist"
                    " WHERE state LIKE 'Waiting for semi-sync ACK%%' AND id <> CONNECTION_ID()"
                )
                for row in await cursor.fetchall():
                    with contextlib.suppress(driver_errors.OperationalError):
                        await cursor.execute(f"KILL {int(row['id'])}")

        await self._run(work, timeout=timeout, retry=False, dedicated=True)

    async def demote(self, *, timeout: float | None = None) -> Position:
        """Make the server read-only, then return its position: every write acknowledged before
        the fence is in that position, and none can follow it. Semi-sync is left alone (the
        caller decides when the primary side may stop waiting for acks)."""
        await self.set_read_only(True, timeout=timeout)
        return await self.primary_position(timeout=timeout)

    async def promote(self, *, semi_sync: bool, timeout: float | None = None) -> Position:
        """Turn a replica into a writable primary: stop and forget replication, set the primary
        side of semi-sync, make it writable last; return its position."""
        flavor = await self.flavor()
        statements = [
            flavor.stop_replication(),
            flavor.reset_replication(),
            *flavor.set_semi_sync(
                primary=semi_sync,
                replica=False,
                timeout_ms=SEMI_SYNC_PRIMARY_TIMEOUT_MS if semi_sync else None,
            ),
            *flavor.set_read_only(False),
        ]
        await self._execute_all(statements, timeout=timeout)
        return await self.primary_position(timeout=timeout)

    # -- replication control ------------------------------------------------------------------

    async def set_replication_source(
        self,
        host: str,
        port: int,
        *,
        user: str,
        password: str,
        semi_sync: bool,
        from_own_binlog: bool = False,
        start: bool = True,
        heartbeat_s: float = 1.0,
        timeout: float | None = None,
    ) -> None:
        """Replicate from ``host:port`` with GTID auto-positioning.

        ``from_own_binlog=True`` is for a former primary (or any server whose own binlog is the
        truth): on MariaDB it first sets ``gtid_slave_pos`` to ``gtid_binlog_pos`` so replication
        resumes after the server's own history. Never use it on a replica that may carry errant
        writes: it would make them look replicated.

        The primary side of semi-sync is switched off (a replica waiting for acks on its own
        commits would stall), the replica side set to ``semi_sync``. Replication is started
        unless ``start=False``; whether it then connects is visible in :meth:`status`.
        """
        flavor = await self.flavor()
        change = flavor.change_source(
            host, port, user=user, password=password, heartbeat_s=heartbeat_s
        )
        statements = [
            flavor.stop_replication(),
            *(flavor.adopt_own_binlog() if from_own_binlog else []),
            change,
            *flavor.set_semi_sync(primary=False, replica=semi_sync),
        ]
        if start:
            statements.append(flavor.start_replication())
        await self._replication_statements(
            statements, f"cannot replicate from {host}:{port}", timeout=timeout
        )

    async def start_replication(self, *, timeout: float | None = None) -> None:
        flavor = await self.flavor()
        await self._replication_statements(
            [flavor.start_replication()], "cannot start replication", timeout=timeout
        )

    async def stop_replication(self, *, timeout: float | None = None) -> None:
        flavor = await self.flavor()
        await self._execute_all([flavor.stop_replication()], timeout=timeout)

    async def stop_io_thread(self, *, timeout: float | None = None) -> None:
        """Stop receiving from the source but keep applying what was received (the first step
        of an emergency reparent: freeze what each replica has, then let it finish applying).

        Keep the SQL thread running: on MariaDB in GTID mode, once both threads are stopped the
        next start discards the relay log and fetches again from ``gtid_slave_pos``.
        """
        flavor = await self.flavor()
        await self._execute_all([flavor.stop_io_thread()], timeout=timeout)

    async def reset_replication(self, *, timeout: float | None = None) -> None:
        """Stop replication and forget its configuration."""
        flavor = await self.flavor()
        await self._execute_all(
            [flavor.stop_replication(), flavor.reset_replication()], timeout=timeout
        )

    async def set_semi_sync(
        self, *, primary: bool, replica: bool, timeout_ms: int | None = None
    ) -> None:
        """Set both sides of semi-sync (and the primary's ack timeout). A running IO thread
        only picks up a changed replica side when restarted, so it is restarted then."""
        flavor = await self.flavor()
        statements = flavor.set_semi_sync(primary=primary, replica=replica, timeout_ms=timeout_ms)
        before = await self.status()
        restart_io = (
            before.replication is not None
            and before.replication.io_state != "No"
            and before.semi_sync_replica != replica
        )
        if restart_io:
            statements = [flavor.stop_io_thread(), *statements, flavor.start_io_thread()]
        await self._execute_all(statements, timeout=None)

    async def kill_connections(self, user: str, *, timeout: float | None = None) -> int:
        """Kill every connection of ``user`` except our own (after fencing a demoted primary,
        so that clients reconnect to the new one); return how many were killed."""
        rows = await self.fetch_all(
            "SELECT ID AS id FROM information_schema.PROCESSLIST"
            " WHERE USER = %s AND ID <> CONNECTION_ID()",
            (user,),
            timeout=timeout,
        )
        killed = 0
        for row in rows:
            try:
                await self.execute(f"KILL {int(row['id'])}", timeout=timeout, retry=True)
                killed += 1
            except MysqlServerError as exc:
                if exc.code != _UNKNOWN_THREAD:  # it ended by itself meanwhile
                    raise
        return killed

    # -- waiting ------------------------------------------------------------------------------

    async def wait_for_position(self, position: Position, timeout: float) -> None:
        """Wait until replication has applied ``position`` (MariaDB ``MASTER_GTID_WAIT``, MySQL
        ``WAIT_FOR_EXECUTED_GTID_SET``), at most ``timeout`` seconds.

        Raises :class:`WaitTimeoutError` carrying the target and the position reached (the
        server's own timeout), or :class:`MysqlTimeoutError` if the server does not answer even
        a second later. The wait runs on a connection of its own so that other calls on this
        client (health checks) are not held up.

        While it runs, the replication status is read every ``_STALL_CHECK_S`` on the shared
        connection: once replication is stopped for good (see :func:`stalled_error`) the wait
        is abandoned, its statement killed, and :class:`ReplicationError` raised, instead of
        waiting out the timeout for a position that cannot come.
        """
        if position.is_empty():
            return
        # A server that wrote (or already holds) the transactions itself has them in its own
        # committed position; MariaDB's MASTER_GTID_WAIT looks only at what replication applied
        # and would wait for ever on the origin (a rerun after a crash after promotion). Not the
        # executed position: on a MariaDB replica a transaction is there before its rows are
        # visible, and a caller reading the replica next would miss them.
        committed = await self._read_position(lambda flavor: flavor.committed_position(), None)
        if committed.contains(position):
            return
        flavor = await self.flavor()
        statement = flavor.wait_for_position(position, timeout)

        async def work(conn: Connection, flavor: Flavor) -> object:
            rows = await _fetch(conn, statement)
            return rows[0]["result"]

        waiting = asyncio.create_task(
            self._run(work, timeout=timeout + _WAIT_GRACE_S, retry=False, dedicated=True)
        )
        try:
            stalled = await self._watch_stall(waiting, position)
        finally:
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(BaseException):
                    await waiting
        if stalled is not None:
            with contextlib.suppress(MysqlError):
                await self._run(self._kill_work, timeout=None, retry=True)
            raise stalled
        reached = flavor.wait_reached(waiting.result())
        if reached:
            return
        snapshot = await self._status_or_none()
        replication = snapshot.replication if snapshot else None
        applied = replication.applied if replication else None
        if reached is None:
            raise ReplicationError(
                f"{self.address}: server refused to wait for {position}",
                address=self.address,
                io_error=replication.last_io_error if replication else "",
                sql_error=replication.last_sql_error if replication else "",
            )
        raise WaitTimeoutError(
            f"{self.address} did not reach {position} within {timeout:g}s (applied: {applied})",
            address=self.address,
            target=position,
            reached=applied,
            io_error=replication.last_io_error if replication else "",
            sql_error=replication.last_sql_error if replication else "",
        )

    async def _watch_stall(
        self, waiting: asyncio.Task[object], position: Position
    ) -> ReplicationError | None:
        """Until ``waiting`` ends: the error to end it with if replication stalls short of
        ``position``, else ``None``. A status that cannot be read says nothing either way."""
        while True:
            await asyncio.wait({waiting}, timeout=_STALL_CHECK_S)
            if waiting.done():
                return None
            try:
                replication = (await self.status()).replication
            except MysqlError:
                continue
            if replication is not None and replication.applied.contains(position):
                continue  # reached: the wait returns by itself
            error = stalled_error(self.address, replication, str(position))
            if error is not None and not waiting.done():
                return error

    async def _kill_work(self, conn: Connection, flavor: Flavor) -> None:
        """Kill what abandoned connections left running (an abandoned wait) right away,
        rather than at the next reconnect."""
        await self._kill_abandoned(conn)

    async def wait_relay_applied(self, timeout: float) -> Position:
        """After :meth:`stop_io_thread`: wait until the SQL thread applied everything the IO
        thread had received when the wait began, and return the applied position.

        The target is read once, at the start: MariaDB empties ``Gtid_IO_Pos`` (and discards
        the relay log) when the SQL thread is restarted while the IO thread is stopped, which
        would otherwise make "applied contains received" trivially true.

        Fails early with :class:`ReplicationError` if the SQL thread is stopped (it would never
        catch up) and with :class:`WaitTimeoutError` after ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target: Position | None = None
        while True:
            remaining = deadline - loop.time()
            snapshot = await self.status(
                timeout=max(0.05, min(self._params.query_timeout, remaining))
            )
            replication = snapshot.replication
            if replication is None:
                raise ReplicationError(
                    f"{self.address} is not configured as a replica", address=self.address
                )
            if target is None:
                target = replication.received
            if replication.applied.contains(target):
                return replication.applied
            if not replication.sql_running:
                raise ReplicationError(
                    f"{self.address}: SQL thread stopped before applying its relay log"
                    f" (received {target}, applied {replication.applied})",
                    address=self.address,
                    sql_error=replication.last_sql_error,
                )
            if loop.time() >= deadline:
                raise WaitTimeoutError(
                    f"{self.address} did not apply its relay log within {timeout:g}s"
                    f" (received {target}, applied {replication.applied})",
                    address=self.address,
                    target=target,
                    reached=replication.applied,
                    sql_error=replication.last_sql_error,
                )
            await asyncio.sleep(_POLL_INTERVAL_S)

    # -- internals ----------------------------------------------------------------------------

    async def _quit(self, conn: Connection) -> None:
        """Say goodbye (so the server does not count an aborted connection), but never wait
        for it long; the socket is closed in any case."""
        if not conn.connected:
            return
        try:
            async with asyncio.timeout(min(0.2, self._params.connect_timeout)):
                await conn.ensure_closed()
        except (TimeoutError, OSError, driver_errors.Error):
            pass
        finally:
            conn.close()

    async def _status_or_none(self) -> ServerStatus | None:
        """Best-effort snapshot to enrich an error message; never raises."""
        try:
            return await self.status()
        except MysqlError:
            return None

    async def _execute_all(self, statements: Sequence[Statement], *, timeout: float | None) -> None:
        """Run control statements in order under one hold of the connection. They are all
        idempotent (SET GLOBAL, STOP/START, CHANGE MASTER), so a stale connection is retried."""

        async def work(conn: Connection, flavor: Flavor) -> None:
            async with conn.cursor() as cursor:
                for statement in statements:
                    log.debug("%s: %s", self.address, statement)
                    await cursor.execute(statement.sql, statement.args)

        await self._run(work, timeout=timeout, retry=True)

    async def _replication_statements(
        self, statements: Sequence[Statement], what: str, *, timeout: float | None
    ) -> None:
        """Like :meth:`_execute_all`, but a refusal becomes a :class:`ReplicationError` that
        carries the replica's last IO/SQL errors."""
        try:
            await self._execute_all(statements, timeout=timeout)
        except MysqlServerError as exc:
            snapshot = await self._status_or_none()
            replication = snapshot.replication if snapshot else None
            raise ReplicationError(
                f"{self.address}: {what}: {exc}",
                address=self.address,
                code=exc.code,
                io_error=replication.last_io_error if replication else "",
                sql_error=replication.last_sql_error if replication else "",
            ) from exc

    async def _run(
        self,
        work: Work[T],
        *,
        timeout: float | None,
        retry: bool,
        dedicated: bool = False,
    ) -> T:
        """Run ``work`` on a connection within the deadline, translating every failure.

        Shared connection: wait for the lock (bounded by the same deadline), connect if needed,
        run; on a lost connection that had been idle in our hands, reconnect and run once more
        if ``retry``. Dedicated: a fresh connection, closed afterwards.
        """
        limit = self._params.query_timeout if timeout is None else timeout
        if dedicated:
            conn, flavor = await self._open()
            try:
                return await self._attempt(conn, flavor, work, limit)
            finally:
                await self._quit(conn)
        if self._lock.locked():  # a free lock is taken at once: no deadline to arm (hot path)
            try:
                async with asyncio.timeout(limit):
                    await self._lock.acquire()
            except TimeoutError:
                raise MysqlTimeoutError(
                    f"{self.address}: connection busy for more than {limit:g}s",
                    address=self.address,
                ) from None
        else:
            await self._lock.acquire()
        try:
            for attempt in range(2):
                reused = self._conn is not None
                if self._conn is None:
                    self._conn, self._flavor = await self._open()
                    self._prepared = {}  # statement ids live and die with their connection
                try:
                    return await self._attempt(self._conn, self._flavor, work, limit)
                except MysqlUnreachableError:
                    if not (retry and reused and attempt == 0):
                        raise
                    log.debug("%s: connection lost, reconnecting once", self.address)
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            self._lock.release()

    async def _attempt(
        self, conn: Connection, flavor: Flavor | None, work: Work[T], limit: float
    ) -> T:
        """One try of ``work``; any failure that leaves the connection in doubt drops it."""
        assert flavor is not None
        try:
            async with asyncio.timeout(limit) as deadline:
                return await work(conn, flavor)
        except TimeoutError as exc:
            if not deadline.expired():
                self._drop(conn)
                raise MysqlUnreachableError(
                    f"{self.address}: connection lost: {exc}", address=self.address
                ) from exc
            self._drop(conn, kill=True)
            raise MysqlTimeoutError(
                f"{self.address}: no answer within {limit:g}s", address=self.address
            ) from None
        except driver_errors.Error as exc:
            error = translate_error(exc, self.address)
            if isinstance(error, MysqlUnreachableError):
                self._drop(conn)
            raise error from exc
        except GtidParseError as exc:
            raise MysqlError(
                f"{self.address}: unexpected position from server: {exc}", address=self.address
            ) from exc
        except OSError as exc:
            self._drop(conn)
            raise MysqlUnreachableError(
                f"{self.address}: connection lost: {exc}", address=self.address
            ) from exc
        except BaseException:
            # Cancelled (or a bug) mid-statement: the protocol state is unknown.
            self._drop(conn, kill=True)
            raise

    async def _fetch_prepared_all(
        self, conn: Connection, queries: Sequence[str]
    ) -> list[list[dict[str, Any]]]:
        """Run argument-free queries as prepared statements of the shared connection, all in
        one write when every one of them is prepared (:mod:`mysqlctl.pipeline`: one write and
        one wake-up per check instead of one per statement); otherwise one at a time."""
        statements = [await self._prepared_statement(conn, sql) for sql in queries]
        if _TEXT_PROTOCOL not in statements and pipeline.pipelines(conn):
            return await pipeline.execute_pipelined(conn, statements)
        return [
            await _fetch(conn, Statement(sql))
            if statement is _TEXT_PROTOCOL
            else (await pipeline.execute_each([statement]))[0]
            for sql, statement in zip(queries, statements, strict=True)
        ]

    async def _prepared_statement(self, conn: Connection, sql: str) -> Any:
        """The connection's prepared statement for an argument-free query, prepared on first
        use. A server that refuses to prepare it (at ``max_prepared_stmt_count``, or a
        statement it cannot prepare) gets it in the text protocol on this connection from then
        on (``_TEXT_PROTOCOL``): a check must not fail for that."""
        statement: Any = self._prepared.get(sql)
        if statement is None:
            try:
                statement = await conn.prepare(sql)
            except driver_errors.Error as exc:
                if isinstance(translate_error(exc, self.address), MysqlUnreachableError):
                    raise
                statement = _TEXT_PROTOCOL
            self._prepared[sql] = statement
        return statement

    def _drop(self, conn: Connection, *, kill: bool = False) -> None:
        """Forget a connection whose state is unknown; remember its server thread if the
        statement it ran may still be running, so that the next connection kills it."""
        # The driver closes the socket itself when cancelled mid-read, but the server thread
        # (and its statement) live on.
        thread_id = getattr(conn, "server_thread_id", None)
        if kill and thread_id:
            self._to_kill.append(int(thread_id[0]))
        conn.close()
        if conn is self._conn:
            self._conn = None
            self._prepared = {}

    async def _open(self) -> tuple[Connection, Flavor]:
        """Connect, detect the flavor, kill abandoned statements; all within connect_timeout."""
        found: list[Flavor] = []

        async def setup(conn: Connection) -> None:
            rows = await _fetch(conn, Statement("SELECT @@GLOBAL.version AS version"))
            found.append(detect_flavor(str(rows[0]["version"]), address=self.address))
            await self._kill_abandoned(conn)

        conn = await open_connection(self._params, cursorclass=_Cursor, setup=setup)
        self._flavor = found[0]
        return conn, found[0]

    async def _kill_abandoned(self, conn: Connection) -> None:
        """Kill statements left running by connections we abandoned (timed out or cancelled),
        so that e.g. a stuck ``SET GLOBAL read_only`` does not complete behind our back."""
        while self._to_kill:
            thread_id = self._to_kill.pop()
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(f"KILL {int(thread_id)}")
            except driver_errors.Error as exc:
                if _code(exc) != _UNKNOWN_THREAD:
                    log.warning("%s: could not kill thread %s: %s", self.address, thread_id, exc)


async def open_connection(
    params: MysqlParams,
    *,
    cursorclass: type[Any],
    autocommit: bool = True,
    database: str | None = None,
    setup: Callable[[Connection], Awaitable[None]] | None = None,
) -> Connection:
    """A new connection, connected and `setup` run on it, all within the connect timeout;
    every failure a typed error naming the server. Shared by the client and the sessions of
    `mysqlctl.session`.

    The connection object is built first so that a connect cut short by the deadline can
    still close its socket."""
    conn = DriverConnection(
        host=params.host,
        port=params.port,
        user=params.user,
        password=params.password,
        database=database,
        connect_timeout=params.connect_timeout,
        autocommit=autocommit,
        charset="utf8mb4",
        cursor_cls=cursorclass,
    )
    address = params.address
    try:
        async with asyncio.timeout(params.connect_timeout) as deadline:
            await conn.connect()
            if setup is not None:
                await setup(conn)
    except TimeoutError as exc:
        conn.close()
        if not deadline.expired():
            raise MysqlUnreachableError(
                f"{address}: cannot connect: {exc}", address=address
            ) from exc
        raise MysqlUnreachableError(
            f"{address}: no answer within connect timeout {params.connect_timeout:g}s",
            address=address,
        ) from None
    except driver_errors.Error as exc:
        conn.close()
        raise translate_error(exc, address, connecting=True) from exc
    except OSError as exc:
        conn.close()
        raise MysqlUnreachableError(f"{address}: cannot connect: {exc}", address=address) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def stalled_error(
    address: str, replication: ReplicationStatus | None, waiting_for: str
) -> ReplicationError | None:
    """The error that ends a wait for ``waiting_for`` on a server whose replication will not
    deliver it (see :meth:`ReplicationStatus.stalled`), or ``None`` while it may.

    A server that is not configured as a replica at all cannot deliver anything either. The
    error carries the server's error number (the IO thread's or the SQL thread's, whichever
    stopped) as ``code`` and both last error messages, so a reparent's report names the cause.
    """
    if replication is None:
        return ReplicationError(
            f"{address} is not configured as a replica: {waiting_for} cannot arrive",
            address=address,
        )
    reason = replication.stalled()
    if reason is None:
        return None
    code = replication.last_sql_errno if not replication.sql_running else replication.last_io_errno
    return ReplicationError(
        f"{address}: replication {reason}: {waiting_for} cannot arrive",
        address=address,
        code=code or None,
        io_error=replication.last_io_error,
        sql_error=replication.last_sql_error,
    )


async def _noop(conn: Connection, flavor: Flavor) -> None:
    return None


async def _fetch(conn: Connection, statement: Statement) -> list[dict[str, Any]]:
    async with conn.cursor() as cursor:
        await cursor.execute(statement.sql, statement.args)
        return list(await cursor.fetchall())


def _args(args: Sequence[object] | None) -> tuple[object, ...] | None:
    return None if args is None else tuple(args)


def _code(exc: BaseException) -> int | None:
    if exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def translate_error(
    exc: driver_errors.Error, address: str, *, connecting: bool = False
) -> MysqlError:
    """Map a driver error to our hierarchy: lost or refused connections are "unreachable",
    everything the server said is a :class:`MysqlServerError` with its code."""
    code = _code(exc)
    message = exc.args[1] if len(exc.args) > 1 else str(exc)
    if isinstance(exc, driver_errors.InterfaceError) or code in _LOST_CONNECTION_CODES:
        verb = "cannot connect" if connecting else "connection lost"
        return MysqlUnreachableError(f"{address}: {verb}: {message}", address=address, code=code)
    return MysqlServerError(f"{address}: error {code}: {message}", address=address, code=code)
