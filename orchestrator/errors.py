"""The one place where errors become HTTP statuses and JSON bodies.

Used by the HTTP API (`orchestrator.api`) and by the inbound webhook (`orchestrator.webhooks`);
it lives outside `api/` because nothing but the app may import `api/`.

Every error answer has the body `{"error": {"code", "message", "details"}}`. The mapping:

| status | code                          | raised as                                              |
|--------|-------------------------------|--------------------------------------------------------|
| 400    | INVALID_ARGUMENT              | bad JSON, unknown command or field, wrong type,         |
|        |                               | malformed name (topo/workflows InvalidArgumentError)    |
| 401    | UNAUTHENTICATED               | missing or wrong bearer token on a command              |
| 404    | NOT_FOUND                     | unknown keyspace, shard, tablet, workflow (NoNodeError) |
| 409    | ALREADY_EXISTS                | a create found the record (NodeExistsError)             |
| 409    | LOCK_HELD                     | shard lock held past the wait; details name the holder  |
| 409    | FAILED_PRECONDITION           | not safe in the shard's state (PreconditionError,       |
|        |                               | disable_active_reparents, UnlockShard of a free shard)  |
| 409    | ABORTED                       | undone after a failure (AbortedError), lost the lock,   |
|        |                               | or lost a compare-and-swap race (BadVersionError)       |
| 502    | PARTIAL_FAILURE               | the new primary is in place but some replica is not     |
|        |                               | following it yet; details carry the workflow result     |
| 502    | TABLET_UNAVAILABLE            | a tablet's MySQL did not answer (unreachable, timeout)  |
| 502    | TABLET_ERROR                  | a tablet's MySQL refused (replication error, SQL error) |
| 503    | UNAVAILABLE                   | etcd unavailable (TopoUnavailableError, TopoError)      |
| 504    | DEADLINE_EXCEEDED             | an operation's own deadline passed (TimeoutError), or   |
|        |                               | the client's, before the workflow acted                 |
| 500    | INTERNAL                      | a bug: logged with its traceback                        |

502 means "the orchestrator worked, a MySQL server behind it did not" (as a gateway's upstream);
503 means our own store, etcd, is unavailable. A 5xx is never an answer to bad input.
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web

from migration import errors as mge
from mysqlctl import errors as me
from topo import errors as te
from workflows import errors as we

log = structlog.get_logger(__name__)


class UnauthorizedError(Exception):
    """A command without the right bearer token."""


def classify(exc: BaseException) -> tuple[int, str, dict[str, Any]]:
    """(status, code, details) for an exception."""
    details: dict[str, Any] = {}
    tablet = getattr(exc, "tablet", None)
    if tablet:
        details["tablet"] = tablet
    field = getattr(exc, "field", None)
    if field:
        details["field"] = field
    if isinstance(exc, UnauthorizedError):
        return 401, "UNAUTHENTICATED", details
    if isinstance(exc, mge.MigrationError):
        return _classify_migration(exc, details)
    if isinstance(exc, te.InvalidArgumentError | we.InvalidArgumentError):
        return 400, "INVALID_ARGUMENT", details
    if isinstance(exc, te.NoNodeError):
        return 404, "NOT_FOUND", {**details, "what": exc.what}
    if isinstance(exc, te.NodeExistsError):
        return 409, "ALREADY_EXISTS", {**details, "what": exc.what}
    if isinstance(exc, te.LockTimeoutError):
        holder = exc.holder
        to_dict = getattr(holder, "to_dict", None)
        return (
            409,
            "LOCK_HELD",
            {
                **details,
                "what": exc.what,
                "holder": to_dict() if callable(to_dict) else str(holder),
                "waited_s": round(exc.waited_s, 3),
            },
        )
    if isinstance(exc, te.NotLockedError):
        return 409, "FAILED_PRECONDITION", details
    if isinstance(exc, te.LockLostError | te.BadVersionError):
        return 409, "ABORTED", details
    if isinstance(exc, we.PartialFailureError):
        return 502, exc.code, details
    if isinstance(exc, we.DeadlineExceededError):
        return 504, exc.code, details
    if isinstance(exc, we.WorkflowError):  # PreconditionError, AbortedError, ...
        return 409, exc.code if exc.code != "UNKNOWN" else "FAILED_PRECONDITION", details
    if isinstance(exc, te.TopoError):  # TopoUnavailableError and etcd's own refusals
        return 503, "UNAVAILABLE", details
    if isinstance(exc, me.MysqlError):
        if exc.address:
            details["address"] = exc.address
        if exc.code is not None:
            details["mysql_code"] = exc.code
        if isinstance(exc, me.MysqlUnreachableError | me.MysqlTimeoutError):
            return 502, "TABLET_UNAVAILABLE", details
        return 502, "TABLET_ERROR", details
    if isinstance(exc, TimeoutError):
        return 504, "DEADLINE_EXCEEDED", details
    if isinstance(exc, web.HTTPException):
        return exc.status, _HTTP_CODES.get(exc.status, "HTTP_ERROR"), details
    return 500, "INTERNAL", details


def _classify_migration(
    exc: mge.MigrationError, details: dict[str, Any]
) -> tuple[int, str, dict[str, Any]]:
    """Migration errors: bad task input 400, unknown task 404, existing task 409, a failed
    check or a refused state change 409 (details list every check), an unreachable source or
    target 502."""
    for attr in ("key", "table", "sources", "checkpoint", "server_position"):
        value = getattr(exc, attr, None)
        if value:
            details[attr] = value
    if isinstance(exc, mge.CheckFailedError):
        details["checks"] = [{"key": p.key, "message": p.message} for p in exc.problems]
        return 409, "FAILED_PRECONDITION", details
    if isinstance(exc, mge.TaskConfigError):
        return 400, "INVALID_ARGUMENT", details
    if isinstance(exc, mge.NoSuchTaskError):
        return 404, "NOT_FOUND", {**details, "what": f"task {exc.name}"}
    if exc.code == "NOT_FOUND":  # a DDL lock
        return 404, "NOT_FOUND", details
    if isinstance(exc, mge.TaskExistsError):
        return 409, "ALREADY_EXISTS", {**details, "what": f"task {exc.name}"}
    if isinstance(exc, mge.SourceUnavailableError | mge.TargetUnavailableError):
        return 502, exc.code, details
    return 409, exc.code if exc.code != "MIGRATION_ERROR" else "FAILED_PRECONDITION", details


_HTTP_CODES = {
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def error_body(
    exc: BaseException, extra_details: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) for an exception; unexpected ones are logged with a traceback."""
    status, code, details = classify(exc)
    if extra_details:
        details = {**details, **extra_details}
    if status == 500:
        log.error("unexpected error in API", error=repr(exc), exc_info=exc)
        message = f"internal error: {type(exc).__name__}: {exc}"
    elif isinstance(exc, web.HTTPException):
        message = exc.text or exc.reason
    else:
        message = str(exc) or type(exc).__name__
    return status, {"error": {"code": code, "message": message, "details": details}}


def error_response(exc: BaseException, extra_details: dict[str, Any] | None = None) -> web.Response:
    status, body = error_body(exc, extra_details)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)
