"""Unit tests of check-task's pure parts (migration/check.py): privileges read from SHOW GRANTS
text, and the report's shape. No server."""

from __future__ import annotations

from migration.check import SOURCE_PRIVILEGES, TARGET_PRIVILEGES, CheckReport, _missing

ACCOUNT = "`orc`@`%`"


def grants(*lines: str) -> str:
    return "\n".join(lines)


def test_all_privileges_on_everything_misses_nothing() -> None:
    text = grants(f"GRANT ALL PRIVILEGES ON *.* TO {ACCOUNT} WITH GRANT OPTION")
    assert _missing(text, TARGET_PRIVILEGES) == []
    assert _missing(text, SOURCE_PRIVILEGES) == []


def test_mariadb_identified_by_suffix_does_not_hide_the_grant() -> None:
    text = f"GRANT ALL PRIVILEGES ON *.* TO {ACCOUNT} IDENTIFIED BY PASSWORD '*ABC'"
    assert _missing(text, TARGET_PRIVILEGES) == []


def test_a_partial_list_reports_the_missing_ones_in_the_needed_order() -> None:
    text = grants(f"GRANT SELECT, INSERT, UPDATE, DELETE ON *.* TO {ACCOUNT}")
    assert _missing(text, TARGET_PRIVILEGES) == ["CREATE", "DROP", "ALTER", "INDEX"]


def test_source_privileges_granted_exactly_are_enough() -> None:
    text = grants(f"GRANT SELECT, REPLICATION SLAVE ON *.* TO {ACCOUNT}")
    assert _missing(text, SOURCE_PRIVILEGES) == []


def test_privileges_of_several_global_lines_add_up() -> None:
    text = grants(
        f"GRANT SELECT ON *.* TO {ACCOUNT}",
        f"GRANT REPLICATION SLAVE ON *.* TO {ACCOUNT}",
    )
    assert _missing(text, SOURCE_PRIVILEGES) == []


def test_lower_case_privilege_names_count() -> None:
    assert _missing(f"GRANT select, replication slave ON *.* TO {ACCOUNT}", SOURCE_PRIVILEGES) == []


def test_grants_on_a_single_database_do_not_count() -> None:
    text = grants(
        f"GRANT USAGE ON *.* TO {ACCOUNT}",
        f"GRANT ALL PRIVILEGES ON `shop`.* TO {ACCOUNT}",
        f"GRANT SELECT, INSERT ON `shop`.`orders` TO {ACCOUNT}",
    )
    assert _missing(text, TARGET_PRIVILEGES) == list(TARGET_PRIVILEGES)


def test_no_grants_at_all_misses_everything() -> None:
    assert _missing("", SOURCE_PRIVILEGES) == list(SOURCE_PRIVILEGES)


def test_report_lists_every_problem_with_its_key() -> None:
    report = CheckReport()
    assert report.ok
    assert report.to_dict()["msg"] == "check-task passed"
    report.add("unreachable", "target")
    report.add("no primary key", "shop.orders")
    report.targets = {"m.orders": ["b:shop.orders", "a:shop.orders"]}
    out = report.to_dict()
    assert out["result"] is False
    assert out["msg"] == "2 problem(s) found"
    assert out["checks"] == [
        {"key": "target", "message": "unreachable"},
        {"key": "shop.orders", "message": "no primary key"},
    ]
    assert out["targets"] == {"m.orders": ["a:shop.orders", "b:shop.orders"]}
    assert report.target_counts() == {"m.orders": 2}
