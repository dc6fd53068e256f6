"""Unit tests of the binlog reader's pure parts (migration/binlog.py): the GTID position after
each transaction, and the replica server_id of a reader. No server."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from migration.binlog import PositionTracker, reader_server_id
from mysqlctl.gtid import MysqlGtidSet

U1 = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
U2 = "4f22ab58-82db-22f2-af44-d91bba53a673"


# -- MariaDB ----------------------------------------------------------------------------------


def test_mariadb_start_position_is_printed_back_ordered_by_domain() -> None:
    assert PositionTracker("MariaDB", "10-1-5,2-1-3,0-7-9").text() == "0-7-9,2-1-3,10-1-5"


def test_mariadb_start_tolerates_spaces_and_empty_parts() -> None:
    assert PositionTracker("MariaDB", " 1-2-3 , ,0-1-1,").text() == "0-1-1,1-2-3"


def test_mariadb_empty_start_is_an_empty_position() -> None:
    t = PositionTracker("MariaDB", "")
    assert t.text() == ""
    assert t.add("0-1-1") == "0-1-1"


def test_mariadb_add_replaces_the_gtid_of_its_domain_only() -> None:
    t = PositionTracker("MariaDB", "0-1-5,1-2-3")
    assert t.add("1-2-4") == "0-1-5,1-2-4"
    assert t.add("0-3-6") == "0-3-6,1-2-4"
    assert t.text() == "0-3-6,1-2-4"


def test_mariadb_add_of_a_new_domain_takes_its_numeric_place() -> None:
    t = PositionTracker("MariaDB", "2-1-1,11-1-1")
    assert t.add("3-1-1") == "2-1-1,3-1-1,11-1-1"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 9), st.integers(1, 10**6)),
                max_size=30))  # fmt: skip
def test_mariadb_position_is_the_last_gtid_per_domain(gtids: list[tuple[int, int, int]]) -> None:
    t = PositionTracker("MariaDB", "")
    last: dict[int, str] = {}
    for d, s, n in gtids:
        text = f"{d}-{s}-{n}"
        last[d] = text
        t.add(text)
    assert t.text() == ",".join(last[d] for d in sorted(last))


# -- MySQL ------------------------------------------------------------------------------------


def test_mysql_add_unions_the_gtid_into_the_executed_set() -> None:
    t = PositionTracker("MySQL8", f"{U1}:1-4")
    assert t.add(f"{U1}:5") == f"{U1}:1-5"
    assert t.add(f"{U1}:7") == f"{U1}:1-5:7"
    assert t.add(f"{U1}:6") == f"{U1}:1-7"


def test_mysql_add_of_another_source_keeps_both() -> None:
    t = PositionTracker("MySQL8", f"{U1}:1-3")
    out = t.add(f"{U2}:1")
    assert MysqlGtidSet.parse(out) == MysqlGtidSet.parse(f"{U1}:1-3,{U2}:1")


def test_mysql_empty_start_is_an_empty_set() -> None:
    t = PositionTracker("MySQL8", "")
    assert t.text() == ""
    assert t.add(f"{U1}:1") == f"{U1}:1"


def test_mysql_start_is_not_parsed_as_mariadb_domains() -> None:
    t = PositionTracker("MySQL8", f"{U1}:1-3,{U2}:1-2")
    assert MysqlGtidSet.parse(t.text()) == MysqlGtidSet.parse(f"{U1}:1-3,{U2}:1-2")


# -- reader_server_id -------------------------------------------------------------------------


def test_reader_server_id_is_stable() -> None:
    assert reader_server_id("t", "commerce/-80", 3) == reader_server_id("t", "commerce/-80", 3)


def test_reader_server_id_differs_by_epoch_task_and_source() -> None:
    base = reader_server_id("t", "commerce/-80", 3)
    assert reader_server_id("t", "commerce/-80", 4) != base
    assert reader_server_id("u", "commerce/-80", 3) != base
    assert reader_server_id("t", "commerce/80-", 3) != base


@settings(max_examples=300, deadline=None)
@given(task=st.text(max_size=20), source=st.text(max_size=20), epoch=st.integers(0, 10**9))
def test_reader_server_id_is_in_our_range_of_unsigned_32_bit_ids(
    task: str, source: str, epoch: int
) -> None:
    sid = reader_server_id(task, source, epoch)
    assert 1_000_000_000 <= sid < 2_000_000_000 < 2**32


def test_reader_server_ids_of_consecutive_epochs_do_not_collide() -> None:
    ids = {reader_server_id("task", "commerce/-80", e) for e in range(1000)}
    assert len(ids) == 1000
