"""Unit tests of the snapshot plans (migration/snapshot.py): which statements open a consistent
snapshot and read its position, per server flavor. No server."""

from __future__ import annotations

import pytest

from migration.snapshot import MARIADB_PLAN, MYSQL8_PLAN, plan_for
from mysqlctl.errors import MysqlError


@pytest.mark.parametrize(
    "version", ["10.11.6-MariaDB", "10.6.16-MariaDB-log", "5.5.5-10.11.6-MariaDB-1:10.11.6+maria"]
)
def test_mariadb_versions_get_the_mariadb_plan(version: str) -> None:
    assert plan_for(version) is MARIADB_PLAN


@pytest.mark.parametrize("version", ["8.0.36", "8.4.0", "8.0.36-0ubuntu0.22.04.1"])
def test_mysql8_versions_get_the_mysql8_plan(version: str) -> None:
    assert plan_for(version) is MYSQL8_PLAN


def test_unsupported_versions_are_refused() -> None:
    with pytest.raises(MysqlError):
        plan_for("5.7.44")


def test_mariadb_plan_takes_no_lock_and_reads_the_snapshot_binlog_position() -> None:
    assert MARIADB_PLAN.flavor == "MariaDB"
    assert MARIADB_PLAN.before == (
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
    )
    assert MARIADB_PLAN.after == ()
    q = MARIADB_PLAN.position_query
    assert q.startswith("SELECT BINLOG_GTID_POS(")
    assert q.index("'BINLOG_SNAPSHOT_FILE'") < q.index("'BINLOG_SNAPSHOT_POSITION'")
    assert "information_schema.SESSION_STATUS" in q
    assert not any("LOCK" in s for s in MARIADB_PLAN.before)


def test_mysql8_plan_reads_gtid_executed_under_a_global_read_lock() -> None:
    assert MYSQL8_PLAN.flavor == "MySQL8"
    assert MYSQL8_PLAN.before == (
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "FLUSH TABLES WITH READ LOCK",
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
    )
    assert MYSQL8_PLAN.position_query == "SELECT @@GLOBAL.gtid_executed"
    assert MYSQL8_PLAN.after == ("UNLOCK TABLES",)


def test_mysql8_snapshot_starts_inside_the_lock_and_the_lock_ends_after_the_read() -> None:
    before = MYSQL8_PLAN.before
    assert before.index("FLUSH TABLES WITH READ LOCK") < before.index(
        "START TRANSACTION WITH CONSISTENT SNAPSHOT"
    )
    assert "UNLOCK TABLES" not in before
    assert MYSQL8_PLAN.after[-1] == "UNLOCK TABLES"
