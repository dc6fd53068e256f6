"""The route table's vocabulary: a `Route` is everything the server and the OpenAPI document need
to know about one endpoint (method, path, parameters, responses, handler), so the two cannot
drift apart. Parameters are validated here, before any handler runs."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orchestrator.commands import (
    ALIAS_PATTERN,
    KEYSPACE_PATTERN,
    NON_PRIMARY_TYPES,
    SHARD_PATTERN,
    ArgumentError,
)
from topo.alias import TabletAlias, check_cell, check_keyspace, check_shard
from topo.errors import InvalidArgumentError

if TYPE_CHECKING:
    from orchestrator.service import Service

SERVICE: web.AppKey[Service] = web.AppKey("service")

CELL_PATTERN = r"^[a-z0-9][a-z0-9_]{0,62}$"
WORKFLOW_ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,128}$"
WORKFLOW_ACTION_PATTERN = r"^[A-Za-z][A-Za-z0-9_:()|-]{0,99}$"
ALL_TABLET_TYPES = ("primary", *NON_PRIMARY_TYPES)
WORKFLOW_STATUSES = ("running", "succeeded", "failed", "interrupted")


def _whole(value: str) -> str:
    if value != value.strip() or any(ord(c) < 32 for c in value):
        raise InvalidArgumentError(f"{value!r} has surrounding spaces or control characters")
    return value


def _number(value: str) -> float:
    try:
        n = float(value)
    except ValueError:
        raise InvalidArgumentError(f"want a number, got {value!r}") from None
    if not 0 <= n <= 1e9:
        raise InvalidArgumentError(f"{value!r} out of range (0 to 1e9)")
    return n


def _integer(value: str) -> int:
    if not re.fullmatch(r"[0-9]{1,6}", value):
        raise InvalidArgumentError(f"want a whole number from 1 to 999999, got {value!r}")
    n = int(value)
    if n < 1:
        raise InvalidArgumentError(f"want a whole number from 1 to 999999, got {value!r}")
    return n


BOOL_VALUES = ("true", "false", "1", "0")


def _bool(value: str) -> bool:
    if value not in BOOL_VALUES:
        raise InvalidArgumentError(f"want true, false, 1 or 0, got {value!r}")
    return value in ("true", "1")


def _enum(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise InvalidArgumentError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _pattern(pattern: str, what: str, value: str) -> str:
    if not re.fullmatch(pattern[1:-1], value):
        raise InvalidArgumentError(f"malformed {what} {value!r}")
    return value


def _workflow_id(value: str) -> str:
    if not re.fullmatch(WORKFLOW_ID_PATTERN[1:-1], value):
        raise InvalidArgumentError(f"malformed workflow id {value!r}")
    return value


_PARSERS: dict[str, Callable[[str], Any]] = {
    "keyspace": lambda v: check_keyspace(_whole(v)),
    "shard": lambda v: check_shard(_whole(v)),
    "cell": lambda v: check_cell(_whole(v)),
    "alias": lambda v: str(TabletAlias.parse(_whole(v))),
    "tablet_type": _enum(ALL_TABLET_TYPES),
    "workflow_status": _enum(WORKFLOW_STATUSES),
    "workflow_id": _workflow_id,
    "workflow_action": lambda v: _pattern(WORKFLOW_ACTION_PATTERN, "workflow action", v),
    "number": _number,
    "integer": _integer,
    "bool": _bool,
    "string": lambda v: v,
}

_SCHEMAS: dict[str, dict[str, Any]] = {
    "keyspace": {"type": "string", "pattern": KEYSPACE_PATTERN},
    "shard": {"type": "string", "pattern": "^" + SHARD_PATTERN + "$"},
    "cell": {"type": "string", "pattern": CELL_PATTERN},
    "alias": {"type": "string", "pattern": ALIAS_PATTERN},
    "tablet_type": {"type": "string", "enum": list(ALL_TABLET_TYPES)},
    "workflow_status": {"type": "string", "enum": list(WORKFLOW_STATUSES)},
    "workflow_id": {"type": "string", "pattern": WORKFLOW_ID_PATTERN},
    "workflow_action": {"type": "string", "pattern": WORKFLOW_ACTION_PATTERN},
    "number": {"type": "number", "minimum": 0, "maximum": 1e9},
    "integer": {"type": "integer", "minimum": 1, "maximum": 999999},
    "bool": {"type": "string", "enum": list(BOOL_VALUES)},
    "string": {"type": "string"},
}


@dataclass(frozen=True)
class Param:
    """A path or query parameter: its kind decides both validation and OpenAPI schema."""

    name: str
    kind: str
    help: str
    where: str = "query"

    def schema(self) -> dict[str, Any]:
        return dict(_SCHEMAS[self.kind])

    def parse(self, raw: str) -> Any:
        try:
            return _PARSERS[self.kind](raw)
        except InvalidArgumentError as e:
            raise ArgumentError(
                f"{self.where} parameter {self.name}: {e}", field=self.name
            ) from None


# A handler gets the request, the service and its validated parameters; it returns a JSON-able
# value (sent as 200 application/json) or a response of its own.
Handler = Callable[[web.Request, "Service", dict[str, Any]], Awaitable[Any]]

JSON = "application/json"
NDJSON = "application/x-ndjson"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    operation_id: str
    params: tuple[Param, ...] = ()
    # Extra statuses besides 200 (and the 400/500 every route may answer).
    responses: Mapping[int, str] = field(default_factory=dict)
    # Schema of the 200 answer (JSON), or None for "an object".
    response_schema: Mapping[str, Any] | None = None
    # The 200 answer's media types.
    content_types: tuple[str, ...] = (JSON,)
    description: str = ""
    auth: bool = False
    body_schema: Mapping[str, Any] | None = None
    # Streams without end (watch): left out of fuzzing.
    endless: bool = False

    def parse_params(self, request: web.Request) -> dict[str, Any]:
        """The declared parameters, validated; an undeclared query parameter is refused (a
        filter that is silently ignored answers a question nobody asked)."""
        known = {p.name for p in self.params if p.where == "query"}
        unknown = sorted(set(request.query) - known)
        if unknown:
            raise ArgumentError(
                f"unknown query parameter(s) {', '.join(unknown)}; accepted: "
                f"{', '.join(sorted(known)) or 'none'}",
                field=unknown[0],
            )
        out: dict[str, Any] = {}
        for p in self.params:
            raw = request.match_info.get(p.name) if p.where == "path" else request.query.get(p.name)
            out[p.name] = None if raw is None else p.parse(raw)
        return out


def path(name: str, kind: str, help: str) -> Param:
    return Param(name, kind, help, where="path")


KS = path("keyspace", "keyspace", "keyspace name")
SHARD = path("shard", "shard", "shard name: 0, or a key range like -80")
ALIAS = path("alias", "alias", "tablet alias, <cell>-<uid>")
CELL = path("cell", "cell", "cell name")
