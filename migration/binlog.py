"""Reading a source's binlog as whole transactions, off the event loop.

`mysql-replication` is synchronous, so it runs in a thread of its own, which assembles events
into :class:`~migration.rows.Transaction` values and hands them to the event loop through a
queue that wakes the loop only when the consumer waits on it (one wake-up per transaction
costs a self-pipe write and a GIL hand-over each, most of the thread's time on single-row
transactions). The thread never gets ahead by more than `max_pending` transactions
(backpressure), and it stops at the next event after :meth:`BinlogReader.stop`; heartbeats every
`heartbeat_s` make sure there is a next event on a quiet source, and tell the consumer it is
caught up.

The library can reconnect by itself after a lost connection, from its `auto_position`. We keep
that attribute at the position after the last whole transaction read, so that a reconnect
resumes exactly there; an open transaction cut short by the reconnect is dropped when the next
GTID event starts another one. The position the sync commits is always our own, never the
library's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import NONE_SOURCE
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from migration.errors import (
    DivergenceError,
    PausingError,
    SourceSwitchedError,
    SourceUnavailableError,
)
from migration.rows import DELETE, INSERT, UPDATE, DdlChange, RowChange, Transaction
from migration.upstream import ServerIdentity, identity_of_connection
from mysqlctl.client import MysqlParams
from mysqlctl.gtid import MysqlGtidSet

# Route = where rows of (db, table) go, or None to leave them out.
Router = Callable[[str, str], tuple[str, str] | None]

_GTID_NOT_IN_BINLOG = 1236


@dataclass(frozen=True)
class Heartbeat:
    """The source had nothing more to send: the consumer is caught up."""

    at: float


class PositionTracker:
    """The GTID position after each transaction read, as text the server accepts back.

    MariaDB: the last GTID per domain (`0-101-42,1-7-3`). MySQL: the executed set."""

    def __init__(self, flavor: str, start: str) -> None:
        self.mariadb = flavor == "MariaDB"
        self._domains: dict[str, str] = {}
        self._mysql = MysqlGtidSet.parse(start) if not self.mariadb else None
        if self.mariadb:
            for gtid in filter(None, (g.strip() for g in start.split(","))):
                self._domains[gtid.split("-", 1)[0]] = gtid

    def add(self, gtid: str) -> str:
        if self.mariadb:
            self._domains[gtid.split("-", 1)[0]] = gtid
        else:
            assert self._mysql is not None
            self._mysql = self._mysql.union(MysqlGtidSet.parse(gtid))
        return self.text()

    def text(self) -> str:
        if self.mariadb:
            return ",".join(self._domains[d] for d in sorted(self._domains, key=int))
        assert self._mysql is not None
        return self._mysql.body()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# Values the library decodes as None although the column holds one: an empty SET and the zero
# dates (`0000-00-00`) that sql_mode may allow. Kept as they are, not turned into NULL.
_NOT_NULL = {
    NONE_SOURCE.EMPTY_SET: "",
    NONE_SOURCE.OUT_OF_DATE_RANGE: "0000-00-00",
    NONE_SOURCE.OUT_OF_DATETIME_RANGE: "0000-00-00 00:00:00",
    NONE_SOURCE.OUT_OF_DATETIME2_RANGE: "0000-00-00 00:00:00",
}


def _values(
    values: dict[str, Any], none_sources: dict[str, str] | None, names: tuple[str, ...]
) -> tuple[Any, ...]:
    row = tuple(values[n] for n in names)
    if not none_sources:
        return row
    fixed = {n: _NOT_NULL[src] for n, src in none_sources.items() if src in _NOT_NULL}
    if not fixed:
        return row
    return tuple(fixed.get(n, v) if v is None else v for n, v in zip(names, row, strict=True))


def reader_server_id(task: str, source_id: str, epoch: int) -> int:
    """A replica server_id of our own per (task, source, epoch): a server drops an older
    connection that registers with the same id, so two readers must never share one."""
    return 1_000_000_000 + zlib.crc32(f"{task}|{source_id}|{epoch}".encode()) % 1_000_000_000


class BinlogReader:
    """One binlog stream from `start` on; see the module docstring."""

    def __init__(
        self,
        params: MysqlParams,
        *,
        flavor: str,
        start: str,
        server_id: int,
        route: Router,
        ignored_schemas: list[str],
        expect: ServerIdentity | None = None,
        heartbeat_s: float = 0.1,
        max_pending: int = 5000,
    ) -> None:
        self.params = params
        self.flavor = flavor
        self.start_position = start
        self.server_id = server_id
        self.route = route
        self.ignored_schemas = ignored_schemas
        # Every connection the library opens (its reconnects included) must reach this server.
        self.expect = expect
        self.heartbeat_s = heartbeat_s
        # Filled by the thread, emptied by the loop; `_waiter` is the consumer's future while
        # it waits on an empty queue (both under `_lock`).
        self._items: collections.deque[Transaction | Heartbeat | BaseException] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._waiter: asyncio.Future[None] | None = None
        self._room = threading.Semaphore(max_pending)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: BinLogStreamReader | None = None
        # Updated by the thread: the newest event's timestamp and when it was read.
        self.last_event_ts = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"binlog {self.params.address}", daemon=True
        )
        self._thread.start()

    async def next(self) -> Transaction | Heartbeat:
        """The next whole transaction (or a heartbeat); raises what stopped the stream."""
        assert self._loop is not None
        while True:
            item = self.next_nowait()
            if item is not None:
                return item
            waiter = self._loop.create_future()
            with self._lock:
                if self._items:
                    continue  # filled meanwhile
                self._waiter = waiter
            try:
                await waiter
            finally:
                with self._lock:
                    if self._waiter is waiter:
                        self._waiter = None

    def next_nowait(self) -> Transaction | Heartbeat | None:
        with self._lock:
            if not self._items:
                return None
            item = self._items.popleft()
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Transaction):
            self._room.release()
        return item

    async def stop(self) -> None:
        """Stop the thread (within about a heartbeat) and close its connections."""
        self._stop.set()
        self._room.release()  # a thread blocked on backpressure wakes up
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                sock = stream._stream_connection._sock
                if sock is not None:
                    sock.shutdown(2)  # wakes a blocked read at once
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)

    # -- the thread ----------------------------------------------------------------------

    def _put(self, item: Transaction | Heartbeat | BaseException) -> None:
        assert self._loop is not None
        with self._lock:
            self._items.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    def _run(self) -> None:
        try:
            self._read()
        except BaseException as exc:  # handed to the consumer
            if not self._stop.is_set():
                self._put(self._translate(exc))
        finally:
            stream, self._stream = self._stream, None
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, PausingError | SourceSwitchedError):
            return exc
        code = exc.args[0] if isinstance(exc, pymysql.err.Error) and exc.args else None
        if code == _GTID_NOT_IN_BINLOG:
            message = exc.args[1] if len(exc.args) > 1 else str(exc)
            return DivergenceError(
                f"{self.params.address} cannot serve the binlog from {self.start_position}: "
                f"{message}",
                checkpoint=self.start_position,
                server_position="",
            )
        return SourceUnavailableError(f"{self.params.address}: binlog stream: {exc!r}")

    def _read(self) -> None:
        p = self.params
        self._stream = stream = BinLogStreamReader(
            connection_settings={
                "host": p.host, "port": p.port, "user": p.user, "password": p.password,
                "connect_timeout": p.connect_timeout,
            },
            server_id=self.server_id,
            pymysql_wrapper=self._connect,
            blocking=True,
            auto_position=self.start_position,
            is_mariadb=self.flavor == "MariaDB",
            slave_heartbeat=self.heartbeat_s,
            freeze_schema=True,
            ignored_schemas=self.ignored_schemas,
            only_events=[
                MariadbGtidEvent, GtidEvent, QueryEvent, XidEvent, WriteRowsEvent,
                UpdateRowsEvent, DeleteRowsEvent, HeartbeatLogEvent,
            ],
            enable_logging=False,
        )  # fmt: skip
        tracker = PositionTracker(self.flavor, self.start_position)
        current: Transaction | None = None
        for event in stream:
            if self._stop.is_set():
                return
            if isinstance(event, MariadbGtidEvent | GtidEvent):
                current = Transaction(gtid=event.gtid, position="", timestamp=event.timestamp)
                self.last_event_ts = event.timestamp
            elif isinstance(event, HeartbeatLogEvent):
                self._put(Heartbeat(time.time()))
            elif current is None:
                continue  # the tail of a transaction cut short by a reconnect
            elif isinstance(event, WriteRowsEvent | DeleteRowsEvent | UpdateRowsEvent):
                self._add_rows(current, event)
            elif isinstance(event, XidEvent):
                self._finish(current, tracker, stream)
                current = None
            elif isinstance(event, QueryEvent):
                query = event.query.strip() if isinstance(event.query, str) else ""
                if query.upper() == "BEGIN":
                    continue
                if query.upper() != "COMMIT":
                    schema = event.schema.decode() if isinstance(event.schema, bytes) else ""
                    current.changes.append(DdlChange(schema, query))
                self._finish(current, tracker, stream)
                current = None

    def _connect(self, **settings: Any) -> pymysql.connections.Connection:
        """Each connection the library opens, first or reconnect: refused when the address
        now answers as another server (see `migration.upstream`)."""
        conn = pymysql.connect(**settings)
        if self.expect is None:
            return conn
        try:
            found = identity_of_connection(conn, self.flavor)
        except BaseException:
            conn.close()
            raise
        if found != self.expect:
            conn.close()
            raise SourceSwitchedError(
                f"{self.params.address} now answers as {found}, not {self.expect} that this "
                "sync run checked: the upstream server was switched; checking the new one "
                "against the checkpoint"
            )
        return conn

    def _add_rows(self, txn: Transaction, event: Any) -> None:
        target = self.route(event.schema, event.table)
        if target is None:
            return
        names = tuple(c.name for c in event.columns)
        if names and str(names[0]).startswith("UNKNOWN_COL"):
            raise PausingError(
                f"{self.params.address}: row events of {event.schema}.{event.table} carry no "
                "column names: set binlog_row_metadata=FULL on the source"
            )
        if isinstance(event, UpdateRowsEvent):
            kind = UPDATE
            rows: list[Any] = [
                (_values(r["before_values"], r.get("before_none_sources"), names),
                 _values(r["after_values"], r.get("after_none_sources"), names))
                for r in event.rows
            ]  # fmt: skip
        else:
            kind = INSERT if isinstance(event, WriteRowsEvent) else DELETE
            rows = [_values(r["values"], r.get("none_sources"), names) for r in event.rows]
        txn.changes.append(
            RowChange(kind, event.schema, event.table, target[0], target[1], names, rows)
        )
        txn.rows += len(rows)

    def _finish(self, txn: Transaction, tracker: PositionTracker, stream: Any) -> None:
        txn.position = tracker.add(txn.gtid)
        # A reconnect by the library resumes after this transaction, not at the start.
        stream.auto_position = txn.position
        while not self._room.acquire(timeout=0.2):
            if self._stop.is_set():
                return
        if self._stop.is_set():
            return
        self._put(txn)
