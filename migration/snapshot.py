"""A consistent snapshot of a source and the GTID position it corresponds to.

The full load reads every table in one snapshot, and the sync then starts exactly at that
snapshot's position: nothing in between is lost or applied twice.

- MariaDB: ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` makes the binlog position of the
  snapshot available as ``binlog_snapshot_file`` / ``binlog_snapshot_position`` (status
  variables of the session), and ``BINLOG_GTID_POS(file, pos)`` turns it into a GTID position.
  No lock is taken.
- MySQL 8: the snapshot and ``@@gtid_executed`` can only be read together under a lock that
  stops commits for an instant: ``LOCK INSTANCE FOR BACKUP`` does not (it allows DML), so
  ``FLUSH TABLES WITH READ LOCK``, start the snapshot, read ``@@GLOBAL.gtid_executed``,
  ``UNLOCK TABLES``. This is the statement list below; it is unit tested, not run here (no
  MySQL 8 server can be installed on the machines this project is built on).
"""

from __future__ import annotations

from dataclasses import dataclass

from mysqlctl.flavor import detect_flavor
from mysqlctl.session import Session


@dataclass(frozen=True)
class SnapshotPlan:
    """The statements that open a snapshot, and the query that reads its position."""

    flavor: str
    before: tuple[str, ...]
    position_query: str
    after: tuple[str, ...]


MARIADB_PLAN = SnapshotPlan(
    flavor="MariaDB",
    before=(
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
    ),
    position_query=(
        "SELECT BINLOG_GTID_POS("
        "(SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS"
        " WHERE VARIABLE_NAME = 'BINLOG_SNAPSHOT_FILE'),"
        "(SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS"
        " WHERE VARIABLE_NAME = 'BINLOG_SNAPSHOT_POSITION'))"
    ),
    after=(),
)

MYSQL8_PLAN = SnapshotPlan(
    flavor="MySQL8",
    before=(
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "FLUSH TABLES WITH READ LOCK",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
    ),
    position_query="SELECT @@GLOBAL.gtid_executed",
    after=("UNLOCK TABLES",),
)


def plan_for(version: str) -> SnapshotPlan:
    flavor = detect_flavor(version)
    return MARIADB_PLAN if flavor.name == "MariaDB" else MYSQL8_PLAN


async def open_snapshot(s: Session) -> tuple[str, str]:
    """Start a consistent snapshot on `s`; returns (flavor name, GTID position text). The
    snapshot lasts until the session's transaction ends."""
    version = str((await s.fetch_rows("SELECT @@GLOBAL.version"))[0][0])
    plan = plan_for(version)
    for sql in plan.before:
        await s.execute(sql)
    try:
        rows = await s.fetch_rows(plan.position_query)
    finally:
        for sql in plan.after:
            await s.execute(sql)
    position = rows[0][0]
    text = position.decode() if isinstance(position, bytes) else str(position or "")
    return plan.flavor, text.replace("\n", "")
