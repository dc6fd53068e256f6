"""Talking to one MySQL/MariaDB server: flavors, GTID positions, replication control,
read-only and semi-sync, and the reparent journal.

Nothing here knows about topology or workflows; callers get typed errors (:class:`MysqlError`
and its subclasses) that always name the server.
"""

from mysqlctl.client import MysqlClient, MysqlParams
from mysqlctl.errors import (
    MysqlError,
    MysqlServerError,
    MysqlTimeoutError,
    MysqlUnreachableError,
    ReplicationError,
    UnsupportedFlavorError,
    WaitTimeoutError,
)
from mysqlctl.flavor import (
    Flavor,
    MariadbFlavor,
    Mysql8Flavor,
    ReplicationStatus,
    ServerStatus,
    Statement,
    detect_flavor,
)
from mysqlctl.gtid import (
    GtidParseError,
    MariadbGtidSet,
    MysqlGtidSet,
    Position,
    compare,
    find_errant,
    most_advanced,
    parse_position,
)
from mysqlctl.journal import (
    JournalEntry,
    ensure_journal_table,
    read_journal,
    wait_for_journal_entry,
    write_journal_entry,
)

__all__ = [
    "Flavor",
    "GtidParseError",
    "JournalEntry",
    "MariadbFlavor",
    "MariadbGtidSet",
    "Mysql8Flavor",
    "MysqlClient",
    "MysqlError",
    "MysqlGtidSet",
    "MysqlParams",
    "MysqlServerError",
    "MysqlTimeoutError",
    "MysqlUnreachableError",
    "Position",
    "ReplicationError",
    "ReplicationStatus",
    "ServerStatus",
    "Statement",
    "UnsupportedFlavorError",
    "WaitTimeoutError",
    "compare",
    "detect_flavor",
    "ensure_journal_table",
    "find_errant",
    "most_advanced",
    "parse_position",
    "read_journal",
    "wait_for_journal_entry",
    "write_journal_entry",
]
