"""The SQL each flavor sends and how it reads status rows: pure unit tests, no server.

MySQL 8 has no server in our test environment, so these tests are its only check; the row
dicts use the column names of MySQL 8.0.22+ ``SHOW REPLICA STATUS``.
"""

from __future__ import annotations

import math

import pytest

from mysqlctl.client import stalled_error
from mysqlctl.errors import ReplicationError, UnsupportedFlavorError, WaitTimeoutError
from mysqlctl.flavor import (
    MariadbFlavor,
    Mysql8Flavor,
    ReplicationStatus,
    Statement,
    detect_flavor,
)
from mysqlctl.gtid import GtidParseError, MariadbGtidSet, MysqlGtidSet

MARIADB = MariadbFlavor()
MYSQL = Mysql8Flavor()
UUID_A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
UUID_B = "4f22ab58-82db-22f2-af44-d91bb0530673"


def rendered(statements: list[Statement]) -> list[str]:
    return [statement.render() for statement in statements]


# -- flavor detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("10.11.19-MariaDB-0+deb12u1-log", MariadbFlavor),
        ("5.5.5-10.6.12-MariaDB", MariadbFlavor),
        ("10.3.39-MariaDB", MariadbFlavor),
        ("11.4.2-MariaDB-ubu2404", MariadbFlavor),
        ("8.0.36", Mysql8Flavor),
        ("8.0.23-log", Mysql8Flavor),
        ("8.4.0-commercial", Mysql8Flavor),
        ("8.0.36-28", Mysql8Flavor),  # Percona Server
    ],
)
def test_detect_flavor_from_version(version: str, expected: type) -> None:
    assert isinstance(detect_flavor(version), expected)


@pytest.mark.parametrize(
    "version", ["10.2.44-MariaDB", "8.0.22", "5.7.44-log", "5.6.51", "PostgreSQL 16", ""]
)
def test_detect_flavor_refuses_unsupported_versions(version: str) -> None:
    with pytest.raises(UnsupportedFlavorError) as raised:
        detect_flavor(version, address="db1:3306")
    assert raised.value.address == "db1:3306"
    assert raised.value.version == version


# -- read-only, replication control -----------------------------------------------------------


def test_read_only_statements() -> None:
    assert rendered(MARIADB.set_read_only(True)) == ["SET GLOBAL read_only = ON"]
    assert rendered(MARIADB.set_read_only(False)) == ["SET GLOBAL read_only = OFF"]
    assert rendered(MYSQL.set_read_only(True)) == [
        "SET GLOBAL read_only = ON",
        "SET GLOBAL super_read_only = ON",
    ]
    assert rendered(MYSQL.set_read_only(False)) == [
        "SET GLOBAL super_read_only = OFF",
        "SET GLOBAL read_only = OFF",
    ]


def test_replication_thread_statements() -> None:
    assert [
        s.render()
        for s in (
            MARIADB.start_replication(),
            MARIADB.stop_replication(),
            MARIADB.start_io_thread(),
            MARIADB.stop_io_thread(),
            MARIADB.reset_replication(),
        )
    ] == [
        "START SLAVE",
        "STOP SLAVE",
        "START SLAVE IO_THREAD",
        "STOP SLAVE IO_THREAD",
        "RESET SLAVE ALL",
    ]
    assert [
        s.render()
        for s in (
            MYSQL.start_replication(),
            MYSQL.stop_replication(),
            MYSQL.start_io_thread(),
            MYSQL.stop_io_thread(),
            MYSQL.reset_replication(),
        )
    ] == [
        "START REPLICA",
        "STOP REPLICA",
        "START REPLICA IO_THREAD",
        "STOP REPLICA IO_THREAD",
        "RESET REPLICA ALL",
    ]


def test_adopting_own_binlog_only_matters_on_mariadb() -> None:
    assert rendered(MARIADB.adopt_own_binlog()) == [
        "SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos"
    ]
    assert MYSQL.adopt_own_binlog() == []


def test_mariadb_change_master_uses_gtid_slave_pos() -> None:
    statement = MARIADB.change_source(
        "10.0.0.5", 3306, user="repl", password="s3cret", heartbeat_s=1.0
    )
    assert statement.render() == (
        "CHANGE MASTER TO MASTER_HOST = '10.0.0.5', MASTER_PORT = 3306,"
        " MASTER_USER = 'repl', MASTER_PASSWORD = 's3cret', MASTER_USE_GTID = slave_pos,"
        " MASTER_CONNECT_RETRY = 1, MASTER_HEARTBEAT_PERIOD = 1.000"
    )


def test_mysql_change_source_uses_auto_position() -> None:
    statement = MYSQL.change_source(
        "db-2.example.com", 3307, user="repl", password="pw", heartbeat_s=0.5
    )
    assert statement.render() == (
        "CHANGE REPLICATION SOURCE TO SOURCE_HOST = 'db-2.example.com', SOURCE_PORT = 3307,"
        " SOURCE_USER = 'repl', SOURCE_PASSWORD = 'pw', SOURCE_AUTO_POSITION = 1,"
        " SOURCE_CONNECT_RETRY = 1, SOURCE_HEARTBEAT_PERIOD = 0.500, GET_SOURCE_PUBLIC_KEY = 1"
    )


def test_change_source_escapes_strings_and_hides_password_when_printed() -> None:
    statement = MARIADB.change_source(
        "::1", 3306, user="o'neil", password="it's\\'; DROP TABLE x; --", heartbeat_s=2
    )
    text = statement.render()
    assert "MASTER_USER = 'o\\'neil'" in text
    assert "MASTER_PASSWORD = 'it\\'s\\\\\\'; DROP TABLE x; --'" in text
    assert statement.args == ("::1", "o'neil", "it's\\'; DROP TABLE x; --")
    assert "DROP TABLE" not in str(statement)
    assert "MASTER_PASSWORD = '***'" in str(statement)


@pytest.mark.parametrize(
    ("host", "port"),
    [
        ("db1'; DROP TABLE t; --", 3306),
        ("db 1", 3306),
        ("", 3306),
        ("x" * 256, 3306),
        ("db1", 0),
        ("db1", 65536),
        ("db1", True),
        ("db1", "3306"),
        ("db1", 3306.0),
    ],
)
def test_change_source_refuses_bad_host_or_port(host: str, port: int) -> None:
    for flavor in (MARIADB, MYSQL):
        with pytest.raises(ValueError):
            flavor.change_source(host, port, user="repl", password="pw", heartbeat_s=1)


@pytest.mark.parametrize("heartbeat", [-1, math.nan, math.inf, 5_000_000, True])
def test_change_source_refuses_bad_heartbeat(heartbeat: float) -> None:
    with pytest.raises(ValueError):
        MARIADB.change_source("db1", 3306, user="repl", password="pw", heartbeat_s=heartbeat)


def test_change_source_refuses_bad_user() -> None:
    with pytest.raises(ValueError):
        MARIADB.change_source("db1", 3306, user="", password="pw", heartbeat_s=1)
    with pytest.raises(ValueError):
        MARIADB.change_source("db1", 3306, user="a\x00b", password="pw", heartbeat_s=1)


def test_semi_sync_statements() -> None:
    assert rendered(MARIADB.set_semi_sync(primary=True, replica=False, timeout_ms=2500)) == [
        "SET GLOBAL rpl_semi_sync_master_enabled = ON",
        "SET GLOBAL rpl_semi_sync_slave_enabled = OFF",
        "SET GLOBAL rpl_semi_sync_master_timeout = 2500",
    ]
    assert rendered(MYSQL.set_semi_sync(primary=False, replica=True)) == [
        "SET GLOBAL rpl_semi_sync_source_enabled = OFF",
        "SET GLOBAL rpl_semi_sync_replica_enabled = ON",
    ]
    with pytest.raises(ValueError):
        MARIADB.set_semi_sync(primary=True, replica=False, timeout_ms=-1)


# -- positions and waits ------------------------------------------------------------------------


def test_position_queries() -> None:
    assert MARIADB.primary_position().render() == "SELECT @@GLOBAL.gtid_binlog_pos AS position"
    assert MARIADB.applied_position().render() == "SELECT @@GLOBAL.gtid_slave_pos AS position"
    assert MYSQL.primary_position().render() == "SELECT @@GLOBAL.gtid_executed AS position"
    assert MARIADB.committed_position().render() == "SELECT @@GLOBAL.gtid_current_pos AS position"
    assert MYSQL.committed_position().render() == "SELECT @@GLOBAL.gtid_executed AS position"


def test_wait_statements_and_results() -> None:
    mariadb_pos = MariadbGtidSet.parse("0-101-42,1-102-7")
    assert MARIADB.wait_for_position(mariadb_pos, 2.5).render() == (
        "SELECT MASTER_GTID_WAIT('0-101-42,1-102-7', 2.500) AS result"
    )
    assert MARIADB.wait_reached(0) is True
    assert MARIADB.wait_reached(-1) is False
    assert MARIADB.wait_reached(None) is None

    mysql_pos = MysqlGtidSet.parse(f"{UUID_A}:1-5")
    assert MYSQL.wait_for_position(mysql_pos, 1).render() == (
        f"SELECT WAIT_FOR_EXECUTED_GTID_SET('{UUID_A}:1-5', 1.000) AS result"
    )
    assert MYSQL.wait_reached(0) is True
    assert MYSQL.wait_reached(1) is False


def test_wait_refuses_other_flavors_position_and_bad_timeout() -> None:
    with pytest.raises(TypeError):
        MARIADB.wait_for_position(MysqlGtidSet.parse(f"{UUID_A}:1"), 1)
    with pytest.raises(ValueError):
        MARIADB.wait_for_position(MariadbGtidSet.parse("0-1-1"), -1)
    with pytest.raises(ValueError):
        MARIADB.wait_for_position(MariadbGtidSet.parse("0-1-1"), math.nan)


def test_status_queries_take_no_arguments() -> None:
    # They are sent joined as one multi-statement without argument interpolation.
    for flavor in (MARIADB, MYSQL):
        for query in flavor.status_queries():
            assert "%s" not in query and ";" not in query


# -- parsing status rows ------------------------------------------------------------------------


def mariadb_vars(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "server_id": 102,
        "version": "10.11.19-MariaDB-log",
        "read_only": 1,
        "executed": "0-101-42",
        "applied": "0-101-42",
        "semi_sync_primary": 0,
        "semi_sync_replica": 1,
    }
    row.update(overrides)
    return row


def mariadb_slave_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "Slave_IO_State": "Waiting for master to send event",
        "Master_Host": "127.0.0.1",
        "Master_User": "orc",
        "Master_Port": 40001,
        "Slave_IO_Running": "Yes",
        "Slave_SQL_Running": "Yes",
        "Last_IO_Error": "",
        "Last_SQL_Error": "",
        "Seconds_Behind_Master": 0,
        "Using_Gtid": "Slave_Pos",
        "Gtid_IO_Pos": "0-101-42",
    }
    row.update(overrides)
    return row


def test_mariadb_status_of_a_primary() -> None:
    status = MARIADB.parse_status(
        [[mariadb_vars(server_id=101, read_only=0, applied="", semi_sync_primary=1)], []]
    )
    assert status.server_id == 101
    assert status.server_uuid is None
    assert status.read_only is False
    assert status.position == MariadbGtidSet.parse("0-101-42")
    assert status.replication is None
    assert status.semi_sync_primary is True
    # Not a replica: its own writes are not errant.
    assert status.errant.is_empty()


def test_mariadb_status_of_a_replica() -> None:
    status = MARIADB.parse_status(
        [
            [mariadb_vars(applied="0-101-40")],
            [mariadb_slave_row(Gtid_IO_Pos="0-101-42", Seconds_Behind_Master=3)],
        ]
    )
    replication = status.replication
    assert replication is not None
    assert (replication.source_host, replication.source_port) == ("127.0.0.1", 40001)
    assert replication.io_running and replication.sql_running and replication.running
    assert replication.io_state == "Yes"
    assert replication.received == MariadbGtidSet.parse("0-101-42")
    assert replication.applied == MariadbGtidSet.parse("0-101-40")
    assert replication.lag_seconds == 3
    assert status.read_only is True
    assert status.semi_sync_replica is True


def test_mariadb_status_of_a_broken_replica() -> None:
    status = MARIADB.parse_status(
        [
            [mariadb_vars()],
            [
                mariadb_slave_row(
                    Slave_IO_Running="Connecting",
                    Slave_SQL_Running="No",
                    Seconds_Behind_Master=None,
                    Last_IO_Error="error connecting to master",
                    Last_SQL_Error="Duplicate entry",
                )
            ],
        ]
    )
    replication = status.replication
    assert replication is not None
    assert replication.io_state == "Connecting"
    assert not replication.io_running and not replication.sql_running
    assert replication.lag_seconds is None
    assert replication.last_io_error == "error connecting to master"
    assert replication.last_sql_error == "Duplicate entry"


def mariadb_replication(**overrides: object) -> ReplicationStatus:
    status = MARIADB.parse_status(
        [[mariadb_vars(applied="0-101-42")], [mariadb_slave_row(**overrides)]]
    )
    assert status.replication is not None
    return status.replication


def test_mariadb_error_numbers_are_read() -> None:
    replication = mariadb_replication(
        Slave_IO_Running="No", Last_IO_Errno=1236, Last_IO_Error="Got fatal error 1236",
        Last_SQL_Errno="1062", Last_SQL_Error="Duplicate entry",
    )  # fmt: skip
    assert (replication.last_io_errno, replication.last_sql_errno) == (1236, 1062)
    # Columns missing (or NULL) read as no error.
    assert (mariadb_replication(Last_IO_Errno=None).last_io_errno,
            mariadb_replication().last_sql_errno) == (0, 0)  # fmt: skip


def test_stalled_replication_is_told_from_replication_that_may_recover() -> None:
    # Replicating, or retrying a connect error (the server keeps trying): may deliver.
    assert mariadb_replication().stalled() is None
    assert mariadb_replication(Slave_IO_Running="Preparing").stalled() is None
    assert mariadb_replication(
        Slave_IO_Running="Connecting", Last_IO_Errno=2003, Last_IO_Error="error connecting"
    ).stalled() is None  # fmt: skip
    # IO thread stopped without an error (on purpose): someone may start it again.
    assert mariadb_replication(Slave_IO_Running="No").stalled() is None
    # IO thread stopped with an error while its relay log still holds unapplied
    # transactions: the SQL thread goes on applying them.
    assert mariadb_replication(
        Slave_IO_Running="No", Last_IO_Errno=1236, Gtid_IO_Pos="0-101-45"
    ).stalled() is None  # fmt: skip
    # Stalled: the IO thread gave up with an error and nothing is left to apply...
    assert mariadb_replication(
        Slave_IO_Running="No", Last_IO_Errno=1236, Gtid_IO_Pos="0-101-42"
    ).stalled() == "IO thread stopped with error 1236"  # fmt: skip
    # ... or the SQL thread stopped, with an error or without.
    assert mariadb_replication(
        Slave_SQL_Running="No", Last_SQL_Errno=1062
    ).stalled() == "SQL thread stopped with error 1062"  # fmt: skip
    assert mariadb_replication(Slave_SQL_Running="No").stalled() == "SQL thread stopped"


def test_stalled_error_names_the_server_and_its_error() -> None:
    replication = mariadb_replication(
        Slave_IO_Running="No", Last_IO_Errno=1236, Last_IO_Error="Got fatal error 1236 from master"
    )  # fmt: skip
    error = stalled_error("127.0.0.1:4001", replication, "journal entry 7")
    assert isinstance(error, ReplicationError) and not isinstance(error, WaitTimeoutError)
    assert (error.address, error.code) == ("127.0.0.1:4001", 1236)
    assert str(error) == (
        "127.0.0.1:4001: replication IO thread stopped with error 1236: journal entry 7 cannot"
        " arrive (Last_IO_Error: Got fatal error 1236 from master)"
    )
    sql = stalled_error("h:1", mariadb_replication(Slave_SQL_Running="No", Last_SQL_Errno=1950,
                                                   Last_SQL_Error="out-of-order"), "x")  # fmt: skip
    assert sql is not None and sql.code == 1950 and sql.sql_error == "out-of-order"
    assert stalled_error("h:1", mariadb_replication(), "x") is None
    not_a_replica = stalled_error("h:1", None, "x")
    assert not_a_replica is not None and "not configured as a replica" in str(not_a_replica)


def test_mariadb_errant_is_local_write_on_a_replica() -> None:
    status = MARIADB.parse_status(
        [[mariadb_vars(executed="0-102-43", applied="0-101-42")], [mariadb_slave_row()]]
    )
    assert status.errant == MariadbGtidSet.parse("0-102-43")


def test_replicated_commit_seen_before_slave_pos_is_not_errant() -> None:
    # The snapshot saw a replicated commit (origin 101) in the binlog before gtid_slave_pos
    # caught up: it keeps its origin's server_id, so it is never counted as errant.
    racy = MARIADB.parse_status(
        [[mariadb_vars(executed="0-101-43", applied="0-101-42")], [mariadb_slave_row()]]
    )
    assert racy.errant.is_empty()


def test_local_write_on_a_replica_is_errant_and_survives_recheck() -> None:
    # Server 102 wrote 0-102-43 itself: that is a local (errant) transaction.
    real = MARIADB.parse_status(
        [[mariadb_vars(executed="0-102-43", applied="0-101-42")], [mariadb_slave_row()]]
    )
    assert str(real.errant) == "MariaDB/0-102-43"
    assert MARIADB.recheck_errant(real, {"position": "0-101-42"}).errant == real.errant


def test_mysql_status_with_mysql8_column_names() -> None:
    executed = f"{UUID_A}:1-100,\n{UUID_B}:1-3"
    status = MYSQL.parse_status(
        [
            [
                {
                    "server_id": 202,
                    "server_uuid": UUID_B,
                    "version": "8.0.36",
                    "read_only": 1,
                    "super_read_only": 1,
                    "executed": executed,
                }
            ],
            [
                {"Variable_name": "rpl_semi_sync_replica_enabled", "Value": "ON"},
                {"Variable_name": "rpl_semi_sync_source_enabled", "Value": "OFF"},
            ],
            [
                {
                    "Replica_IO_State": "Waiting for source to send event",
                    "Source_Host": "10.0.0.1",
                    "Source_Port": 3306,
                    "Replica_IO_Running": "Yes",
                    "Replica_SQL_Running": "Yes",
                    "Seconds_Behind_Source": 1,
                    "Last_IO_Error": "",
                    "Last_SQL_Error": "",
                    "Last_IO_Errno": 0,
                    "Last_SQL_Errno": "13121",
                    "Retrieved_Gtid_Set": f"{UUID_A}:50-101",
                    "Executed_Gtid_Set": executed,
                    "Auto_Position": 1,
                }
            ],
        ]
    )
    assert status.server_uuid == UUID_B
    assert status.read_only is True
    assert status.position == MysqlGtidSet.parse(executed)
    assert status.semi_sync_replica is True and status.semi_sync_primary is False
    assert status.errant.is_empty()
    replication = status.replication
    assert replication is not None
    assert (replication.source_host, replication.source_port) == ("10.0.0.1", 3306)
    assert replication.io_running and replication.sql_running
    assert replication.received == MysqlGtidSet.parse(f"{UUID_A}:50-101")
    assert replication.applied == MysqlGtidSet.parse(executed)
    assert not replication.applied.contains(replication.received)  # 101 not applied yet
    assert replication.lag_seconds == 1
    assert (replication.last_io_errno, replication.last_sql_errno) == (0, 13121)


def test_mysql_status_without_semi_sync_plugins_or_replication() -> None:
    status = MYSQL.parse_status(
        [
            [
                {
                    "server_id": 1,
                    "server_uuid": UUID_A,
                    "version": "8.0.36",
                    "read_only": 0,
                    "super_read_only": 0,
                    "executed": "",
                }
            ],
            [],
            [],
        ]
    )
    assert status.replication is None
    assert not status.semi_sync_primary and not status.semi_sync_replica
    assert status.position.is_empty()


def test_status_parsing_refuses_unexpected_shapes() -> None:
    with pytest.raises(ValueError):
        MARIADB.parse_status([[mariadb_vars()]])
    with pytest.raises(ValueError):
        MARIADB.parse_status([[], []])


def test_column_values_may_arrive_as_bytes() -> None:
    status = MARIADB.parse_status(
        [
            [mariadb_vars(executed=b"0-101-42", applied=b"0-101-42", version=b"10.11.5-MariaDB")],
            [mariadb_slave_row(Master_Host=b"127.0.0.1", Gtid_IO_Pos=b"0-101-42")],
        ]
    )
    assert status.version == "10.11.5-MariaDB"
    assert status.replication is not None and status.replication.source_host == "127.0.0.1"


def test_parsed_positions_are_reused_and_bad_ones_refused_every_time() -> None:
    """Health checks parse the same positions every second: one parse per text, while a bad
    text is refused on every read (errors are not cached)."""
    first = MARIADB.parse_position("0-101-5,1-102-7")
    assert MARIADB.parse_position(b"0-101-5,1-102-7") is first
    assert first == MariadbGtidSet.parse("1-102-7,0-101-5")
    for _ in range(2):
        with pytest.raises(GtidParseError):
            MARIADB.parse_position("0-101-x")
