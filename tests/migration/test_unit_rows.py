"""Unit tests of row changes to downstream SQL (migration/rows.py). Pure logic, no server: the
escape function is pymysql's, wrapping tuples as row constructors like `Session.escape`."""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql.converters import escape_item

import migration.rows
from migration.rows import (
    DELETE,
    INSERT,
    UPDATE,
    DdlChange,
    RowChange,
    Transaction,
    change_statements,
    delete_statements,
    insert_statements,
    key_literal,
    plain_value,
    table_sql,
    update_statement,
)

T = "`db`.`t`"


def esc(value: object) -> str:
    """Like mysqlctl.session.Session.escape: a tuple or list becomes a row constructor."""
    if isinstance(value, tuple | list):
        return "(" + ",".join(escape_item(v, "utf8mb4") for v in value) + ")"
    return str(escape_item(value, "utf8mb4"))


def change(kind: str, rows: list[Any], table: str = "t", columns: tuple[str, ...] = ("id", "v"),
           db: str = "db") -> RowChange:  # fmt: skip
    return RowChange(kind, "src", "src_t", db, table, columns, rows)


def by_id(db: str, table: str) -> tuple[str, ...]:
    return ("id",)


def sqls(out: list[tuple[str, RowChange]]) -> list[str]:
    return [s for s, _ in out]


@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(migration.rows, "MAX_STATEMENT_BYTES", 100)
    return 100


# -- single statements ------------------------------------------------------------------------


def test_insert_is_one_multi_row_statement_with_quoted_columns() -> None:
    assert insert_statements(esc, T, ["id", "v"], [(1, "a"), (2, None)]) == [
        "INSERT INTO `db`.`t` (`id`, `v`) VALUES (1,'a'),(2,NULL)"
    ]


def test_insert_with_replace_says_replace() -> None:
    assert insert_statements(esc, T, ["id"], [(1,)], replace=True) == [
        "REPLACE INTO `db`.`t` (`id`) VALUES (1)"
    ]


def test_insert_of_no_rows_is_no_statement() -> None:
    assert insert_statements(esc, T, ["id"], []) == []
    assert delete_statements(esc, T, ["id"], []) == []


def test_insert_escapes_quotes_and_backquoted_column_names() -> None:
    (sql,) = insert_statements(esc, T, ["we`ird"], [("it's",)])
    assert sql == "INSERT INTO `db`.`t` (`we``ird`) VALUES ('it\\'s')"


def test_insert_turns_json_and_set_values_into_text() -> None:
    (sql,) = insert_statements(esc, T, ["j", "s"], [({"a": [1, 2]}, {"y", "x"})])
    assert sql == """INSERT INTO `db`.`t` (`j`, `s`) VALUES ('{\\"a\\": [1, 2]}','x,y')"""


def test_insert_keeps_plain_scalars_as_the_driver_escapes_them() -> None:
    row = (5, 1.5, decimal.Decimal("2.50"), datetime.datetime(2024, 1, 2, 3, 4, 5), b"\x00b")
    (sql,) = insert_statements(esc, T, ["a", "b", "c", "d", "e"], [row])
    assert sql.endswith("VALUES (5,1.5e0,2.50,'2024-01-02 03:04:05',_binary X'0062')")


def test_delete_by_a_single_column_key_uses_in() -> None:
    assert delete_statements(esc, T, ["id"], [(1,), (2,)]) == [
        "DELETE FROM `db`.`t` WHERE `id` IN (1,2)"
    ]


def test_delete_by_a_composite_key_uses_row_constructors() -> None:
    assert delete_statements(esc, T, ["a", "b"], [(1, "x"), (2, "y")]) == [
        "DELETE FROM `db`.`t` WHERE (`a`, `b`) IN ((1,'x'),(2,'y'))"
    ]


def test_update_sets_every_column_and_finds_the_row_by_its_old_key() -> None:
    sql = update_statement(esc, T, ["id", "v"], ["id"], (1,), (7, "new"))
    assert sql == "UPDATE `db`.`t` SET `id` = 7, `v` = 'new' WHERE `id` = 1"


def test_update_by_a_composite_key_joins_with_and() -> None:
    sql = update_statement(esc, T, ["a", "b", "v"], ["a", "b"], (1, "x"), (1, "x", None))
    assert sql == "UPDATE `db`.`t` SET `a` = 1, `b` = 'x', `v` = NULL WHERE `a` = 1 AND `b` = 'x'"


def test_update_refuses_a_row_of_the_wrong_width() -> None:
    with pytest.raises(ValueError):
        update_statement(esc, T, ["id", "v"], ["id"], (1,), (7,))


def test_key_literal_is_a_row_constructor() -> None:
    assert key_literal(esc, (5,)) == "(5)"
    assert key_literal(esc, (5, "abc")) == "(5,'abc')"


def test_table_sql_quotes_both_names() -> None:
    assert table_sql("a`b", "c") == "`a``b`.`c`"


# -- splitting --------------------------------------------------------------------------------


def test_statements_are_split_under_the_limit_and_keep_every_row(small_limit: int) -> None:
    rows = [(i, "x" * 10) for i in range(20)]
    out = insert_statements(esc, T, ["id", "v"], rows)
    assert len(out) > 1
    assert all(len(s.encode()) <= small_limit for s in out)
    values = ",".join(s.split(" VALUES ", 1)[1] for s in out)
    assert values == ",".join(esc(r) for r in rows)


def test_split_counts_bytes_not_characters(small_limit: int) -> None:
    rows = [(i, "é" * 10) for i in range(20)]
    out = insert_statements(esc, T, ["id", "v"], rows)
    assert all(len(s.encode()) <= small_limit for s in out)
    assert sum(s.count("(") - 1 for s in out) == 20


def test_split_deletes_stay_under_the_limit_with_their_closing_parenthesis(
    small_limit: int,
) -> None:
    out = delete_statements(esc, T, ["id"], [(10**8 + i,) for i in range(30)])
    assert len(out) > 1
    assert all(len(s.encode()) <= small_limit for s in out)
    assert all(
        s.startswith("DELETE FROM `db`.`t` WHERE `id` IN (") and s.endswith(")") for s in out
    )
    ids = [int(x) for s in out for x in s.split("IN (", 1)[1][:-1].split(",")]
    assert ids == [10**8 + i for i in range(30)]


def test_a_row_larger_than_the_limit_goes_alone(small_limit: int) -> None:
    out = insert_statements(esc, T, ["id", "v"], [(1, "a"), (2, "y" * 200), (3, "b")])
    assert len(out) == 3
    assert "y" * 200 in out[1]
    assert "(1,'a')" in out[0] and "(3,'b')" in out[2]


@settings(max_examples=100, deadline=None)
@given(rows=st.lists(st.tuples(st.integers(), st.text(max_size=30)), max_size=40),
       limit=st.integers(min_value=60, max_value=400))  # fmt: skip
def test_split_loses_and_reorders_no_row(rows: list[tuple[int, str]], limit: int) -> None:
    old = migration.rows.MAX_STATEMENT_BYTES
    migration.rows.MAX_STATEMENT_BYTES = limit
    try:
        out = insert_statements(esc, T, ["id", "v"], rows)
    finally:
        migration.rows.MAX_STATEMENT_BYTES = old
    head = "INSERT INTO `db`.`t` (`id`, `v`) VALUES "
    assert all(s.startswith(head) for s in out)
    assert ",".join(s[len(head) :] for s in out) == ",".join(esc(r) for r in rows)
    for s in out:
        items = s[len(head) :]
        # Over the limit only when a single row alone is larger.
        assert len(s.encode()) <= limit or items in {esc(r) for r in rows}


# -- change_statements ------------------------------------------------------------------------


def test_consecutive_inserts_of_one_table_are_one_statement() -> None:
    a = change(INSERT, [(1, "a")])
    b = change(INSERT, [(2, "b"), (3, "c")])
    out = change_statements(esc, [a, b], by_id, safe_mode=False)
    assert sqls(out) == ["INSERT INTO `db`.`t` (`id`, `v`) VALUES (1,'a'),(2,'b'),(3,'c')"]
    assert out[0][1] is a


def test_consecutive_deletes_of_one_table_are_one_statement() -> None:
    out = change_statements(
        esc, [change(DELETE, [(1, "a")]), change(DELETE, [(2, "b")])], by_id, safe_mode=False
    )
    assert sqls(out) == ["DELETE FROM `db`.`t` WHERE `id` IN (1,2)"]


def test_a_change_of_table_flushes_the_group() -> None:
    out = change_statements(
        esc,
        [change(INSERT, [(1, "a")]), change(INSERT, [(2, "b")], table="u"),
         change(INSERT, [(3, "c")])],
        by_id,
        safe_mode=False,
    )  # fmt: skip
    assert sqls(out) == [
        "INSERT INTO `db`.`t` (`id`, `v`) VALUES (1,'a')",
        "INSERT INTO `db`.`u` (`id`, `v`) VALUES (2,'b')",
        "INSERT INTO `db`.`t` (`id`, `v`) VALUES (3,'c')",
    ]


def test_a_change_of_target_schema_or_columns_flushes_the_group() -> None:
    out = change_statements(
        esc,
        [change(INSERT, [(1, "a")]), change(INSERT, [(2, "b")], db="other"),
         change(INSERT, [(3,)], db="other", columns=("id",))],
        by_id,
        safe_mode=False,
    )  # fmt: skip
    assert len(out) == 3


def test_a_change_of_kind_flushes_the_group_and_keeps_the_order() -> None:
    out = change_statements(
        esc,
        [change(INSERT, [(1, "a")]), change(DELETE, [(1, "a")]), change(INSERT, [(1, "b")])],
        by_id,
        safe_mode=False,
    )
    assert sqls(out) == [
        "INSERT INTO `db`.`t` (`id`, `v`) VALUES (1,'a')",
        "DELETE FROM `db`.`t` WHERE `id` IN (1)",
        "INSERT INTO `db`.`t` (`id`, `v`) VALUES (1,'b')",
    ]


def test_updates_are_one_statement_each_never_merged() -> None:
    u1 = change(UPDATE, [((1, "a"), (1, "b")), ((2, "c"), (2, "d"))])
    u2 = change(UPDATE, [((3, "e"), (30, "f"))])
    out = change_statements(esc, [u1, u2], by_id, safe_mode=False)
    assert sqls(out) == [
        "UPDATE `db`.`t` SET `id` = 1, `v` = 'b' WHERE `id` = 1",
        "UPDATE `db`.`t` SET `id` = 2, `v` = 'd' WHERE `id` = 2",
        "UPDATE `db`.`t` SET `id` = 30, `v` = 'f' WHERE `id` = 3",
    ]
    assert [c for _, c in out] == [u1, u1, u2]


def test_the_key_comes_from_the_target_table_not_the_first_column() -> None:
    out = change_statements(
        esc, [change(DELETE, [(1, "k")])], lambda db, t: ("v",), safe_mode=False
    )
    assert sqls(out) == ["DELETE FROM `db`.`t` WHERE `v` IN ('k')"]


def test_safe_mode_turns_insert_into_replace() -> None:
    out = change_statements(esc, [change(INSERT, [(1, "a")])], by_id, safe_mode=True)
    assert sqls(out) == ["REPLACE INTO `db`.`t` (`id`, `v`) VALUES (1,'a')"]


def test_safe_mode_turns_update_into_delete_of_the_old_key_then_replace() -> None:
    u = change(UPDATE, [((1, "a"), (9, "b"))])
    out = change_statements(esc, [u], by_id, safe_mode=True)
    assert sqls(out) == [
        "DELETE FROM `db`.`t` WHERE `id` IN (1)",
        "REPLACE INTO `db`.`t` (`id`, `v`) VALUES (9,'b')",
    ]
    assert [c for _, c in out] == [u, u]


def test_safe_mode_keeps_delete_a_delete() -> None:
    out = change_statements(esc, [change(DELETE, [(1, "a")])], by_id, safe_mode=True)
    assert sqls(out) == ["DELETE FROM `db`.`t` WHERE `id` IN (1)"]


def test_no_changes_no_statements() -> None:
    assert change_statements(esc, [], by_id, safe_mode=False) == []


# -- values and transactions ------------------------------------------------------------------


def test_plain_value_of_dict_and_list_is_json() -> None:
    assert json.loads(plain_value({"a": [1, {"b": None}]})) == {"a": [1, {"b": None}]}
    assert plain_value([1, "x"]) == '[1, "x"]'


def test_plain_value_of_json_object_with_bytes_keys_is_json() -> None:
    # mysql-replication decodes a MySQL JSON column's object keys as bytes.
    assert json.loads(plain_value({b"a": {b"b": [1, "x"]}})) == {"a": {"b": [1, "x"]}}


def test_plain_value_of_a_set_is_its_members_sorted_and_joined() -> None:
    assert plain_value({"b", "a", "c"}) == "a,b,c"
    assert plain_value(frozenset({"x"})) == "x"
    assert plain_value(set()) == ""


@pytest.mark.parametrize("value", [None, 1, "s", b"b", 1.5, decimal.Decimal("1")])
def test_plain_value_leaves_scalars_alone(value: Any) -> None:
    assert plain_value(value) is value


def test_transaction_with_a_ddl_change_is_ddl() -> None:
    t = Transaction(gtid="0-1-1", position="0-1-1", timestamp=0)
    assert not t.is_ddl
    t.changes.append(change(INSERT, [(1, "a")]))
    assert not t.is_ddl
    t.changes.append(DdlChange("db", "ALTER TABLE t ADD c INT"))
    assert t.is_ddl
