"""SQL dialects of replication control: what to send to MariaDB or MySQL 8, and how to read the
answers.

Reparenting needs the same operations on both servers (read the position, stop the IO thread,
point at a new source, wait for a position, fence with read-only), but the statements, variable
names and status columns differ. A :class:`Flavor` turns each operation into :class:`Statement`
objects and turns result rows back into :class:`ServerStatus` / :class:`ReplicationStatus`
values. It does no I/O, so both dialects are unit tested as text (``tests/test_flavor_sql.py``).

MariaDB is exercised against real servers in the test suite. MySQL 8 is not: no MySQL 8 server
can be installed on our test machines, so :class:`Mysql8Flavor` is checked only by those unit
tests against the documented syntax (8.0.23+ ``REPLICA``/``SOURCE`` spellings) and column names.

Strings (host, user, password, positions) always travel as statement arguments, escaped by the
client library with the connection's own rules (the driver interpolates on the client, which also
covers ``CHANGE MASTER``, where servers accept no placeholders). Numbers are validated and then
written as literals.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from asyncmy.converters import escape_item

from mysqlctl.errors import UnsupportedFlavorError
from mysqlctl.gtid import MariadbGtidSet, MysqlGtidSet, Position, find_errant

__all__ = [
    "Flavor",
    "MariadbFlavor",
    "Mysql8Flavor",
    "ReplicationStatus",
    "Row",
    "ServerStatus",
    "Statement",
    "detect_flavor",
]

Row = Mapping[str, Any]
"""One result row as the client returns it: column name -> value."""

_HOST_RE = re.compile(r"[A-Za-z0-9._:\-]{1,255}")
_MAX_HEARTBEAT_S = 4294967.0  # the servers' upper bound for the heartbeat period


@dataclass(frozen=True)
class Statement:
    """One SQL statement with ``%s`` placeholders and the arguments to escape into them.

    ``secret`` marks arguments that must never be printed (a replication password): ``str()``
    replaces them, so a statement can be logged as is.
    """

    sql: str
    args: tuple[object, ...] | None = None
    secret: bool = False

    def render(self) -> str:
        """The statement as the server would receive it (the driver's escaping, backslash mode).

        For tests and debugging; the client passes ``sql`` and ``args`` to the driver instead,
        which escapes with the connection's own character set and SQL mode.
        """
        if self.args is None:
            return self.sql
        return self.sql % tuple(escape_item(arg, "utf8mb4") for arg in self.args)

    def __str__(self) -> str:
        if self.secret and self.args is not None:
            return self.sql % tuple("'***'" for _ in self.args)
        return self.render()


@dataclass(frozen=True, slots=True)
class ReplicationStatus:
    """A replica's replication state, flavor-neutral.

    ``received`` is what the IO thread fetched (MariaDB ``Gtid_IO_Pos``, MySQL
    ``Retrieved_Gtid_Set``) and ``applied`` what the SQL thread executed (MariaDB
    ``@@gtid_slave_pos``, MySQL ``Executed_Gtid_Set``); once the IO thread is stopped, the relay
    log is fully applied when ``applied`` contains ``received``.
    """

    source_host: str | None
    source_port: int | None
    io_running: bool
    sql_running: bool
    io_state: str
    received: Position
    applied: Position
    lag_seconds: int | None
    last_io_error: str
    last_sql_error: str
    # The error numbers of those messages (0: none), e.g. 1236 when the source cannot serve
    # the GTIDs asked for, 2003 while it cannot be reached.
    last_io_errno: int = 0
    last_sql_errno: int = 0

    @property
    def running(self) -> bool:
        """Both threads run: the replica is replicating (or trying to, see ``io_state``)."""
        return self.io_running and self.sql_running

    def stalled(self) -> str | None:
        """Why this replica will apply nothing more until someone acts on it, or ``None``.

        Waits for a position or a journal row ask this, so that replication that cannot deliver
        fails them at once instead of at their timeout. Stalled means: the SQL thread stopped
        (nothing restarts it by itself), or the IO thread stopped with an error (``io_state``
        "No", not "Connecting": the server retries connect errors by itself, and gives up on
        the others, such as 1236 when the source lacks or purged the GTIDs asked for) and the
        SQL thread applied all it had received, so that the relay log holds nothing more.
        """
        if not self.sql_running:
            error = f" with error {self.last_sql_errno}" if self.last_sql_errno else ""
            return f"SQL thread stopped{error}"
        if self.io_state == "No" and self.last_io_errno and self.applied.contains(self.received):
            return f"IO thread stopped with error {self.last_io_errno}"
        return None


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """One snapshot of a server, read by one call (health checks poll it often).

    ``position`` is everything the server executed (MariaDB ``@@gtid_binlog_pos``, MySQL
    ``@@gtid_executed``). ``replication`` is ``None`` when the server is not configured as a
    replica. ``errant`` holds local writes that did not come through replication; it is only
    computed on MariaDB replicas (``gtid_binlog_pos`` minus ``gtid_slave_pos``), since on MySQL it
    needs the primary's set, and is empty otherwise.
    """

    server_id: int
    server_uuid: str | None
    version: str
    read_only: bool
    position: Position
    replication: ReplicationStatus | None
    semi_sync_primary: bool
    semi_sync_replica: bool
    errant: Position


class Flavor(abc.ABC):
    """The SQL of one server family. Stateless; one shared instance per family is enough."""

    name: ClassVar[str]
    position_type: ClassVar[type[MariadbGtidSet] | type[MysqlGtidSet]]

    def parse_position(self, text: str | bytes | None) -> Position:
        """Parse a position in the server's own syntax (no flavor prefix); NULL is empty.

        Positions are immutable, and health checks read the same few positions of every
        server every second, so recently seen texts are parsed once (a bounded cache)."""
        return _parse_position(self.position_type, _text(text))

    def empty_position(self) -> Position:
        return self.position_type.parse("")

    def position_body(self, position: Position) -> str:
        """The text a server function expects for ``position``; refuses another flavor's."""
        if not isinstance(position, self.position_type):
            raise TypeError(f"{self.name} server cannot use a {position.flavor} position")
        return position.body()

    # -- positions and status ---------------------------------------------------------------

    @abc.abstractmethod
    def primary_position(self) -> Statement:
        """A SELECT returning one row with column ``position``: everything executed."""

    @abc.abstractmethod
    def applied_position(self) -> Statement:
        """A SELECT returning one row with column ``position``: what replication applied."""

    @abc.abstractmethod
    def committed_position(self) -> Statement:
        """A SELECT returning one row with column ``position``: every transaction whose
        commit is visible to a reader, whether written here or replicated here.

        Not :meth:`primary_position`: MariaDB adds a replicated transaction to
        ``gtid_binlog_pos`` when it writes the binlog, before the engine commit makes its rows
        visible, so that position can hold a transaction a SELECT does not see yet."""

    @abc.abstractmethod
    def status_queries(self) -> tuple[str, ...]:
        """Statements without arguments whose result sets :meth:`parse_status` reads; the
        client runs them in this order, each as a prepared statement of its connection."""

    @abc.abstractmethod
    def parse_status(self, results: Sequence[Sequence[Row]]) -> ServerStatus:
        """Build the snapshot from the result sets of :meth:`status_queries`, in order."""

    def recheck_errant(self, status: ServerStatus, applied_row: Row) -> ServerStatus:
        """Drop from ``status.errant`` what replication has applied since the snapshot.

        The executed and applied positions are two variables that a replicated commit updates
        one after the other, so one reading can show a replicated transaction as executed but
        not yet applied. Only GTIDs still missing from a second reading of the applied position
        (``applied_row`` from :meth:`applied_position`) are errant.
        """
        if status.errant.is_empty():
            return status
        applied = self.parse_position(applied_row["position"])
        return dataclasses.replace(status, errant=status.errant.difference(applied))

    # -- read-only ----------------------------------------------------------------------------

    @abc.abstractmethod
    def set_read_only(self, on: bool) -> list[Statement]:
        """Statements that fence (or unfence) writes; turning it on waits for in-flight
        commits on both families."""

    # -- replication --------------------------------------------------------------------------

    @abc.abstractmethod
    def start_replication(self) -> Statement: ...

    @abc.abstractmethod
    def stop_replication(self) -> Statement: ...

    @abc.abstractmethod
    def start_io_thread(self) -> Statement: ...

    @abc.abstractmethod
    def stop_io_thread(self) -> Statement: ...

    @abc.abstractmethod
    def reset_replication(self) -> Statement:
        """Forget the replication configuration entirely (the server is to be a primary)."""

    @abc.abstractmethod
    def adopt_own_binlog(self) -> list[Statement]:
        """Statements making the server resume replication after its own binlog history,
        run with replication stopped and before pointing it at a source."""

    @abc.abstractmethod
    def change_source(
        self, host: str, port: int, *, user: str, password: str, heartbeat_s: float
    ) -> Statement:
        """Point replication at ``host:port`` with GTID auto-positioning."""

    @abc.abstractmethod
    def set_semi_sync(
        self, *, primary: bool, replica: bool, timeout_ms: int | None = None
    ) -> list[Statement]:
        """Turn the primary and replica sides of semi-sync on or off."""

    @abc.abstractmethod
    def wait_for_position(self, position: Position, timeout: float) -> Statement:
        """A SELECT returning one row with column ``result``; see :meth:`wait_reached`."""

    @abc.abstractmethod
    def wait_reached(self, result: object) -> bool | None:
        """True if the wait reached the position, False on timeout, None if the server
        refused the wait (NULL: not a replica, bad arguments)."""


class MariadbFlavor(Flavor):
    """MariaDB 10.3+: GTIDs per domain, ``MASTER_USE_GTID=slave_pos``, semi-sync built in."""

    name = "MariaDB"
    position_type = MariadbGtidSet

    def primary_position(self) -> Statement:
        return Statement("SELECT @@GLOBAL.gtid_binlog_pos AS position")

    def applied_position(self) -> Statement:
        return Statement("SELECT @@GLOBAL.gtid_slave_pos AS position")

    def committed_position(self) -> Statement:
        # Per domain: the server's own last binlog GTID if it is newer, else gtid_slave_pos,
        # which a replicated transaction joins only once it has committed.
        return Statement("SELECT @@GLOBAL.gtid_current_pos AS position")

    def status_queries(self) -> tuple[str, ...]:
        # gtid_binlog_pos is read before gtid_slave_pos: a replicated commit updates them in that
        # order, so this order keeps the window for a false errant GTID small (and
        # recheck_errant closes it).
        return (
            "SELECT @@GLOBAL.server_id AS server_id, @@GLOBAL.version AS version,"
            " @@GLOBAL.read_only AS read_only, @@GLOBAL.gtid_binlog_pos AS executed,"
            " @@GLOBAL.gtid_slave_pos AS applied,"
            " @@GLOBAL.rpl_semi_sync_master_enabled AS semi_sync_primary,"
            " @@GLOBAL.rpl_semi_sync_slave_enabled AS semi_sync_replica",
            "SHOW SLAVE STATUS",
        )

    def parse_status(self, results: Sequence[Sequence[Row]]) -> ServerStatus:
        variables, replica_rows = _expect_results(results, 2)
        row = _single(variables)
        server_id = int(row["server_id"])
        executed, applied, errant = _mariadb_positions(
            _text(row["executed"]), _text(row["applied"]), server_id, bool(replica_rows)
        )
        replication = self.parse_replication(replica_rows[0], applied) if replica_rows else None
        return ServerStatus(
            server_id=server_id,
            server_uuid=None,
            version=_text(row["version"]),
            read_only=_as_bool(row["read_only"]),
            position=executed,
            replication=replication,
            semi_sync_primary=_as_bool(row["semi_sync_primary"]),
            semi_sync_replica=_as_bool(row["semi_sync_replica"]),
            errant=errant,
        )

    def parse_replication(self, row: Row, applied: Position) -> ReplicationStatus:
        """Read one ``SHOW SLAVE STATUS`` row; ``applied`` is ``@@gtid_slave_pos``, which the
        row does not contain."""
        host = _text(row.get("Master_Host")) or None
        io_state = _text(row.get("Slave_IO_Running")) or "No"
        return ReplicationStatus(
            source_host=host,
            source_port=_as_int(row.get("Master_Port")) if host else None,
            io_running=io_state == "Yes",
            sql_running=_text(row.get("Slave_SQL_Running")) == "Yes",
            io_state=io_state,
            received=self.parse_position(row.get("Gtid_IO_Pos")),
            applied=applied,
            lag_seconds=_as_int(row.get("Seconds_Behind_Master")),
            last_io_error=_text(row.get("Last_IO_Error")),
            last_sql_error=_text(row.get("Last_SQL_Error")),
            last_io_errno=_as_int(row.get("Last_IO_Errno")) or 0,
            last_sql_errno=_as_int(row.get("Last_SQL_Errno")) or 0,
        )

    def set_read_only(self, on: bool) -> list[Statement]:
        return [Statement(f"SET GLOBAL read_only = {_on_off(on)}")]

    def start_replication(self) -> Statement:
        return Statement("START SLAVE")

    def stop_replication(self) -> Statement:
        return Statement("STOP SLAVE")

    def start_io_thread(self) -> Statement:
        return Statement("START SLAVE IO_THREAD")

    def stop_io_thread(self) -> Statement:
        return Statement("STOP SLAVE IO_THREAD")

    def reset_replication(self) -> Statement:
        return Statement("RESET SLAVE ALL")

    def adopt_own_binlog(self) -> list[Statement]:
        # With MASTER_USE_GTID=slave_pos a former primary would otherwise ask its new source for
        # everything after a stale gtid_slave_pos and re-apply (or conflict with) its own writes.
        return [Statement("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos")]

    def change_source(
        self, host: str, port: int, *, user: str, password: str, heartbeat_s: float
    ) -> Statement:
        _check_source(host, port, user, password)
        heartbeat = _heartbeat_literal(heartbeat_s)
        return Statement(
            "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = "
            f"{port}, MASTER_USER = %s, MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos,"
            f" MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = {heartbeat}",
            (host, user, password),
            secret=True,
        )

    def set_semi_sync(
        self, *, primary: bool, replica: bool, timeout_ms: int | None = None
    ) -> list[Statement]:
        statements = [
            Statement(f"SET GLOBAL rpl_semi_sync_master_enabled = {_on_off(primary)}"),
            Statement(f"SET GLOBAL rpl_semi_sync_slave_enabled = {_on_off(replica)}"),
        ]
        if timeout_ms is not None:
            statements.append(
                Statement(f"SET GLOBAL rpl_semi_sync_master_timeout = {_timeout_ms(timeout_ms)}")
            )
        return statements

    def wait_for_position(self, position: Position, timeout: float) -> Statement:
        return Statement(
            f"SELECT MASTER_GTID_WAIT(%s, {_seconds_literal(timeout)}) AS result",
            (self.position_body(position),),
        )

    def wait_reached(self, result: object) -> bool | None:
        # MASTER_GTID_WAIT: 0 reached, -1 timed out, NULL on bad arguments.
        value = _as_int(result)
        return None if value is None else value == 0


class Mysql8Flavor(Flavor):
    """MySQL 8.0.23+ (and 9.x): GTID sets, ``SOURCE``/``REPLICA`` syntax, ``super_read_only``.

    Semi-sync needs the ``rpl_semi_sync_source`` / ``rpl_semi_sync_replica`` plugins installed;
    the status reads the variables with ``SHOW GLOBAL VARIABLES`` so that a server without them
    reports semi-sync off instead of failing.
    """

    name = "MySQL8"
    position_type = MysqlGtidSet

    def primary_position(self) -> Statement:
        return Statement("SELECT @@GLOBAL.gtid_executed AS position")

    def applied_position(self) -> Statement:
        return Statement("SELECT @@GLOBAL.gtid_executed AS position")

    def committed_position(self) -> Statement:
        # MySQL adds a transaction to gtid_executed after its engine commit.
        return Statement("SELECT @@GLOBAL.gtid_executed AS position")

    def status_queries(self) -> tuple[str, ...]:
        return (
            "SELECT @@GLOBAL.server_id AS server_id, @@GLOBAL.server_uuid AS server_uuid,"
            " @@GLOBAL.version AS version, @@GLOBAL.read_only AS read_only,"
            " @@GLOBAL.super_read_only AS super_read_only, @@GLOBAL.gtid_executed AS executed",
            "SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_%_enabled'",
            "SHOW REPLICA STATUS",
        )

    def parse_status(self, results: Sequence[Sequence[Row]]) -> ServerStatus:
        variables, semi_sync_rows, replica_rows = _expect_results(results, 3)
        row = _single(variables)
        semi_sync = {
            _text(r.get("Variable_name")).lower(): _as_bool(r.get("Value")) for r in semi_sync_rows
        }
        return ServerStatus(
            server_id=int(row["server_id"]),
            server_uuid=_text(row["server_uuid"]) or None,
            version=_text(row["version"]),
            read_only=_as_bool(row["read_only"]),
            position=self.parse_position(row["executed"]),
            replication=self.parse_replication(replica_rows[0]) if replica_rows else None,
            semi_sync_primary=semi_sync.get("rpl_semi_sync_source_enabled", False),
            semi_sync_replica=semi_sync.get("rpl_semi_sync_replica_enabled", False),
            errant=self.empty_position(),
        )

    def parse_replication(self, row: Row) -> ReplicationStatus:
        """Read one ``SHOW REPLICA STATUS`` row (8.0.22+ column names)."""
        host = _text(row.get("Source_Host")) or None
        io_state = _text(row.get("Replica_IO_Running")) or "No"
        return ReplicationStatus(
            source_host=host,
            source_port=_as_int(row.get("Source_Port")) if host else None,
            io_running=io_state == "Yes",
            sql_running=_text(row.get("Replica_SQL_Running")) == "Yes",
            io_state=io_state,
            received=self.parse_position(row.get("Retrieved_Gtid_Set")),
            applied=self.parse_position(row.get("Executed_Gtid_Set")),
            lag_seconds=_as_int(row.get("Seconds_Behind_Source")),
            last_io_error=_text(row.get("Last_IO_Error")),
            last_sql_error=_text(row.get("Last_SQL_Error")),
            last_io_errno=_as_int(row.get("Last_IO_Errno")) or 0,
            last_sql_errno=_as_int(row.get("Last_SQL_Errno")) or 0,
        )

    def set_read_only(self, on: bool) -> list[Statement]:
        # super_read_only also fences users with CONNECTION_ADMIN/SUPER; read_only first so that
        # turning on waits for in-flight commits, and super_read_only off first so that
        # turning off is accepted.
        if on:
            return [
                Statement("SET GLOBAL read_only = ON"),
                Statement("SET GLOBAL super_read_only = ON"),
            ]
        return [
            Statement("SET GLOBAL super_read_only = OFF"),
            Statement("SET GLOBAL read_only = OFF"),
        ]

    def start_replication(self) -> Statement:
        return Statement("START REPLICA")

    def stop_replication(self) -> Statement:
        return Statement("STOP REPLICA")

    def start_io_thread(self) -> Statement:
        return Statement("START REPLICA IO_THREAD")

    def stop_io_thread(self) -> Statement:
        return Statement("STOP REPLICA IO_THREAD")

    def reset_replication(self) -> Statement:
        return Statement("RESET REPLICA ALL")

    def adopt_own_binlog(self) -> list[Statement]:
        # Auto-positioning sends gtid_executed, which already includes the server's own writes.
        return []

    def change_source(
        self, host: str, port: int, *, user: str, password: str, heartbeat_s: float
    ) -> Statement:
        _check_source(host, port, user, password)
        heartbeat = _heartbeat_literal(heartbeat_s)
        # GET_SOURCE_PUBLIC_KEY lets caching_sha2_password work without TLS.
        return Statement(
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST = %s, SOURCE_PORT = "
            f"{port}, SOURCE_USER = %s, SOURCE_PASSWORD = %s, SOURCE_AUTO_POSITION = 1,"
            f" SOURCE_CONNECT_RETRY = 1, SOURCE_HEARTBEAT_PERIOD = {heartbeat},"
            " GET_SOURCE_PUBLIC_KEY = 1",
            (host, user, password),
            secret=True,
        )

    def set_semi_sync(
        self, *, primary: bool, replica: bool, timeout_ms: int | None = None
    ) -> list[Statement]:
        statements = [
            Statement(f"SET GLOBAL rpl_semi_sync_source_enabled = {_on_off(primary)}"),
            Statement(f"SET GLOBAL rpl_semi_sync_replica_enabled = {_on_off(replica)}"),
        ]
        if timeout_ms is not None:
            statements.append(
                Statement(f"SET GLOBAL rpl_semi_sync_source_timeout = {_timeout_ms(timeout_ms)}")
            )
        return statements

    def wait_for_position(self, position: Position, timeout: float) -> Statement:
        return Statement(
            f"SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, {_seconds_literal(timeout)}) AS result",
            (self.position_body(position),),
        )

    def wait_reached(self, result: object) -> bool | None:
        # WAIT_FOR_EXECUTED_GTID_SET: 0 reached, 1 timed out (errors are raised, not returned).
        value = _as_int(result)
        return None if value is None else value == 0


MARIADB = MariadbFlavor()
MYSQL8 = Mysql8Flavor()

_VERSION_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def detect_flavor(version: str, *, address: str | None = None) -> Flavor:
    """Choose the flavor from ``SELECT @@version``.

    MariaDB 10.3+ (semi-sync built in, ``MASTER_GTID_WAIT``) or MySQL 8.0.23+ (``CHANGE
    REPLICATION SOURCE``); anything older or unknown raises :class:`UnsupportedFlavorError`
    rather than sending statements the server would misread.
    """
    text = version.removeprefix("5.5.5-")  # MariaDB's handshake compatibility prefix
    match = _VERSION_RE.match(text)
    if match is None:
        raise UnsupportedFlavorError(
            f"cannot read server version {version!r}", address=address, version=version
        )
    numbers = tuple(int(part) for part in match.groups())
    if "mariadb" in text.lower():
        if numbers >= (10, 3, 0):
            return MARIADB
        raise UnsupportedFlavorError(
            f"MariaDB {text} is too old (need 10.3+)", address=address, version=version
        )
    if numbers >= (8, 0, 23) and numbers[0] in (8, 9):
        return MYSQL8
    raise UnsupportedFlavorError(
        f"unsupported server version {version!r} (need MariaDB 10.3+ or MySQL 8.0.23+)",
        address=address,
        version=version,
    )


# -- helpers ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16384)
def _parse_position(
    position_type: type[MariadbGtidSet] | type[MysqlGtidSet], text: str
) -> Position:
    return position_type.parse(text)


@functools.lru_cache(maxsize=16384)
def _mariadb_positions(
    executed_text: str, applied_text: str, server_id: int, replica: bool
) -> tuple[Position, Position, Position]:
    """A MariaDB server's executed and applied positions and its errant GTIDs (none unless it
    is a replica; see :func:`_own_gtids`), from the texts of ``@@gtid_binlog_pos`` and
    ``@@gtid_slave_pos``. Memoized on the texts: a health check reads the same pair from a
    quiet server every second, and the answer depends on nothing else."""
    executed = _parse_position(MariadbGtidSet, executed_text)
    applied = _parse_position(MariadbGtidSet, applied_text)
    errant = (
        find_errant(_own_gtids(executed, server_id), applied) if replica
        else MariadbGtidSet.parse("")
    )  # fmt: skip
    return executed, applied, errant


def _own_gtids(executed: Position, server_id: int) -> Position:
    """The GTIDs of `executed` that this server generated itself.

    Only those can be errant: a replicated transaction keeps its origin's server_id, and a
    local write gets this server's. Looking at them alone also removes the race in which a
    replicated commit is already in gtid_binlog_pos but not yet in gtid_slave_pos (seen under
    continuous writes, where re-reading moves the race to the next transaction).
    """
    assert isinstance(executed, MariadbGtidSet)
    return MariadbGtidSet.from_gtids(g for g in executed.gtids if g.server_id == server_id)


def _expect_results(results: Sequence[Sequence[Row]], count: int) -> Sequence[Sequence[Row]]:
    if len(results) != count:
        raise ValueError(f"expected {count} result sets, got {len(results)}")
    return results


def _single(rows: Sequence[Row]) -> Row:
    if len(rows) != 1:
        raise ValueError(f"expected one row, got {len(rows)}")
    return rows[0]


def _text(value: object) -> str:
    """Column value as text; drivers return bytes for binary columns and None for NULL."""
    if type(value) is str:  # the common case first: called a dozen times per health check
        return value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _as_int(value: object) -> int | None:
    if value is None or value == "":
        return None
    return int(_text(value)) if not isinstance(value, int) else value


def _as_bool(value: object) -> bool:
    """Server booleans arrive as 0/1 from SELECT @@var and as ON/OFF from SHOW VARIABLES."""
    if isinstance(value, int):
        return value != 0
    return _text(value).strip().upper() in ("1", "ON", "YES", "TRUE")


def _on_off(on: bool) -> str:
    return "ON" if on else "OFF"


def _check_source(host: str, port: int, user: str, password: str) -> None:
    """Refuse arguments that are not what they claim before they reach a statement."""
    if not isinstance(host, str) or _HOST_RE.fullmatch(host) is None:
        raise ValueError(f"invalid replication source host {host!r}")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"invalid replication source port {port!r}")
    if not isinstance(user, str) or not user or len(user) > 128 or "\x00" in user:
        raise ValueError(f"invalid replication user {user!r}")
    if not isinstance(password, str) or "\x00" in password:
        raise ValueError("invalid replication password")


def _heartbeat_literal(seconds: float) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"invalid heartbeat period {seconds!r}")
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_HEARTBEAT_S:
        raise ValueError(f"heartbeat period {seconds!r} out of range 0..{_MAX_HEARTBEAT_S:.0f}")
    return f"{seconds:.3f}"


def _seconds_literal(seconds: float) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"invalid timeout {seconds!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"timeout must be a finite number >= 0, got {seconds!r}")
    return f"{seconds:.3f}"


def _timeout_ms(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**32 - 1:
        raise ValueError(f"invalid semi-sync timeout {value!r} ms")
    return value
