"""Unit tests of how migration errors become HTTP answers (orchestrator/errors.py `classify`
and `error_body`). No server."""

from __future__ import annotations

import pytest

from migration import errors as mge
from orchestrator.errors import classify, error_body


def test_task_config_error_is_400_invalid_argument_naming_the_key() -> None:
    status, code, details = classify(mge.TaskConfigError("unknown key", key="task_mode"))
    assert (status, code) == (400, "INVALID_ARGUMENT")
    assert details == {"key": "task_mode"}


def test_task_config_error_without_a_key_has_no_key_detail() -> None:
    assert classify(mge.TaskConfigError("bad")) == (400, "INVALID_ARGUMENT", {})


def test_check_failed_is_409_and_lists_every_check() -> None:
    problems = [
        mge.TaskConfigError("unreachable", key="target"),
        mge.TaskConfigError("no primary key", key="shop.orders"),
        mge.TaskConfigError("matches nothing", key="routes[1]"),
    ]
    status, code, details = classify(mge.CheckFailedError(problems))
    assert (status, code) == (409, "FAILED_PRECONDITION")
    assert details["checks"] == [
        {"key": "target", "message": "unreachable"},
        {"key": "shop.orders", "message": "no primary key"},
        {"key": "routes[1]", "message": "matches nothing"},
    ]


def test_check_failed_message_counts_and_joins_the_problems() -> None:
    err = mge.CheckFailedError([mge.TaskConfigError("a", key="x"), mge.TaskConfigError("b")])
    assert str(err) == "2 problem(s): x: a; b"


def test_no_such_task_is_404_naming_the_task() -> None:
    assert classify(mge.NoSuchTaskError("t1")) == (404, "NOT_FOUND", {"what": "task t1"})


def test_task_exists_is_409_already_exists_naming_the_task() -> None:
    assert classify(mge.TaskExistsError("t1")) == (409, "ALREADY_EXISTS", {"what": "task t1"})


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (mge.SourceUnavailableError("no tablet"), "SOURCE_UNAVAILABLE"),
        (mge.TargetUnavailableError("refused"), "TARGET_UNAVAILABLE"),
    ],
)
def test_unavailable_source_or_target_is_502(exc: mge.MigrationError, code: str) -> None:
    assert classify(exc) == (502, code, {})


def test_fenced_is_409_aborted() -> None:
    assert classify(mge.FencedError("epoch moved")) == (409, "ABORTED", {})


@pytest.mark.parametrize(
    "exc",
    [
        mge.PausingError("needs a decision"),
        mge.DdlNeedsCoordinationError("merged table"),
        mge.UnsupportedDdlError("RENAME TABLE"),
        mge.MigrationError("anything else"),
    ],
)
def test_pausing_and_other_migration_errors_are_409_failed_precondition(
    exc: mge.MigrationError,
) -> None:
    assert classify(exc) == (409, "FAILED_PRECONDITION", {})


def test_divergence_is_409_with_both_positions() -> None:
    exc = mge.DivergenceError("lost", checkpoint="0-1-10", server_position="0-1-8")
    assert classify(exc) == (
        409,
        "FAILED_PRECONDITION",
        {"checkpoint": "0-1-10", "server_position": "0-1-8"},
    )


def test_key_conflict_is_409_with_table_key_and_sources() -> None:
    exc = mge.KeyConflictError("dup", table="m.orders", key="(5)", sources=["ks/-80", "ks/80-"])
    assert classify(exc) == (
        409,
        "FAILED_PRECONDITION",
        {"table": "m.orders", "key": "(5)", "sources": ["ks/-80", "ks/80-"]},
    )


def test_error_body_carries_code_message_and_details() -> None:
    status, body = error_body(mge.TaskConfigError("is required", key="target"))
    assert status == 400
    assert body == {
        "error": {
            "code": "INVALID_ARGUMENT",
            "message": "target: is required",
            "details": {"key": "target"},
        }
    }
