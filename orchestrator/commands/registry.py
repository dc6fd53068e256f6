"""The command registry: the vocabulary every vtctl-style command is declared in.

Each subject module of this package (`topology`, `reparent`, `replication`, `reads`, `locks`)
registers its commands here with the `command` decorator; the package's `__init__` imports
them all, so `COMMANDS` is complete for whoever imports `orchestrator.commands`. The same table
serves three readers, so there is one way to do each thing:

- the HTTP API (`POST /api/v1/commands/<Name>`): `parse_args` validates a JSON body strictly
  (unknown fields, wrong types, malformed names are refused with `ArgumentError`), then the
  handler runs with a `CommandContext`;
- the OpenAPI document: `Arg.json_schema()` and `Command.body_schema()`;
- the CLI (`orchestrator ctl <Name> ...`): positionals and `--flags` are generated from the
  arguments (see `orchestrator.ctl`).

The package is imported by the CLI, so it stays light: handlers import workflows and
`orchestrator.views` inside their bodies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from topo.alias import TabletAlias, check_keyspace, parse_keyspace_shard
from topo.errors import InvalidArgumentError as TopoInvalidArgumentError

if TYPE_CHECKING:
    from orchestrator.service import Service

ProgressFn = Callable[[dict[str, Any]], None]

# Patterns in JSON-schema (and OpenAPI) form; validation below uses the topo parsers as well,
# with whole-string matching (no trailing newline slips through `$`).
KEYSPACE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,62}$"
SHARD_PATTERN = r"(?:[0-9]+|[0-9a-f]*-[0-9a-f]*)"
KEYSPACE_SHARD_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,62}/" + SHARD_PATTERN + "$"
# The uid is a uint32: up to 9 digits, or 10 digits up to 4294967295.
UID_PATTERN = (
    r"(?:[0-9]{1,9}|[0-3][0-9]{9}|4[01][0-9]{8}|42[0-8][0-9]{7}|429[0-3][0-9]{6}"
    r"|4294[0-8][0-9]{5}|42949[0-5][0-9]{4}|429496[0-6][0-9]{3}|4294967[01][0-9]{2}"
    r"|42949672[0-8][0-9]|429496729[0-5])"
)
ALIAS_PATTERN = r"^[a-z0-9][a-z0-9_]{0,62}-" + UID_PATTERN + "$"
HOST_PATTERN = r"^[A-Za-z0-9_.:\-\[\]]{1,253}$"
DURATION_PATTERN = r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION_S = 86400.0
NON_PRIMARY_TYPES = ("replica", "rdonly", "spare", "drained")
DURABILITY_POLICIES = ("none", "semi_sync")


class ArgumentError(TopoInvalidArgumentError):
    """A command's arguments can never be valid (HTTP 400); `field` names the culprit."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownCommandError(ArgumentError):
    """No command by that name (HTTP 400: the request is wrong, not a missing object)."""


# -- arguments -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument: its JSON name and kind, and how the CLI spells it.

    kind: keyspace, keyspace_shard, alias, alias_list, host, port, bool, duration,
    tablet_type (non-primary types), durability, text; for migration: task_file (the YAML
    text; the CLI reads it from a file), task_name, source_id, source_list, source_op, lock_id.
    cli: "flag" (`--new-primary`), "positional", or "either" (positional or flag, as
    vtctldclient's `InitShardPrimary ks/0 zone1-101` and `--primary zone1-101`).
    """

    name: str
    kind: str
    help: str
    required: bool = False
    default: Any = None
    cli: str = "flag"

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def json_schema(self) -> dict[str, Any]:
        s = _KIND_SCHEMAS[self.kind]()
        if not self.required:  # null means "not given" (the default applies)
            if "oneOf" in s:
                s["oneOf"].append({"type": "null"})
            else:
                s["type"] = [s["type"], "null"]
                if "enum" in s:
                    s["enum"].append(None)
        s["description"] = self.help
        if self.default is not None:
            s["default"] = self.default
        return s

    def parse(self, value: Any) -> Any:
        """The validated Python value of a JSON value; ArgumentError names the field."""
        try:
            return _KIND_PARSERS[self.kind](value)
        except TopoInvalidArgumentError as e:
            raise ArgumentError(f"{self.name}: {e}", field=self.name) from None


def _string(value: Any, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise TopoInvalidArgumentError(f"want {what}, got {_json_type(value)}")
    if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise TopoInvalidArgumentError(f"{value!r} has surrounding spaces or control characters")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _parse_keyspace(value: Any) -> str:
    return check_keyspace(_string(value))


def _parse_keyspace_shard(value: Any) -> tuple[str, str]:
    return parse_keyspace_shard(_string(value, "a string like ks/0"))


def _parse_alias(value: Any) -> str:
    return str(TabletAlias.parse(_string(value, "a tablet alias like zone1-101")))


def _parse_alias_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TopoInvalidArgumentError(f"want an array of tablet aliases, got {_json_type(value)}")
    return tuple(dict.fromkeys(_parse_alias(v) for v in value))


def _parse_host(value: Any) -> str:
    host = _string(value)
    if not re.fullmatch(HOST_PATTERN[1:-1], host):
        raise TopoInvalidArgumentError(f"malformed host {host!r}")
    return host


def _parse_port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopoInvalidArgumentError(f"want an integer port, got {_json_type(value)}")
    if not 0 < value < 65536:
        raise TopoInvalidArgumentError(f"port {value} out of range 1-65535")
    return value


def _parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TopoInvalidArgumentError(f"want true or false, got {_json_type(value)}")
    return value


def parse_duration(value: Any) -> float:
    """Seconds from a number (seconds) or a Go-style duration string: `30s`, `1m30s`, `500ms`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TopoInvalidArgumentError(
            f'want seconds (a number) or a duration like "30s", got {_json_type(value)}'
        )
    if isinstance(value, str):
        if not re.fullmatch(DURATION_PATTERN[1:-1], value):
            raise TopoInvalidArgumentError(
                f'malformed duration {value!r}: want e.g. "30s", "1m30s", "500ms"'
            )
        seconds = sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(value))
    else:
        seconds = float(value)
    if not 0 < seconds <= MAX_DURATION_S:
        raise TopoInvalidArgumentError(f"duration {value!r} must be > 0 and at most 24h")
    return seconds


def _parse_enum(choices: tuple[str, ...], what: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise TopoInvalidArgumentError(
                f"unknown {what} {value!r}: want one of {', '.join(choices)}"
            )
        return value

    return parse


def _parse_tablet_type(value: Any) -> str:
    if value == "primary":
        raise TopoInvalidArgumentError(
            "a tablet becomes primary only through a reparent (InitShardPrimary, "
            "PlannedReparentShard, EmergencyReparentShard, TabletExternallyReparented)"
        )
    return _parse_enum(NON_PRIMARY_TYPES, "tablet type")(value)


def _parse_scope(value: Any) -> tuple[str, str | None]:
    """`ks` or `ks/shard`."""
    text = _string(value, "a keyspace or keyspace/shard")
    if "/" in text:
        ks, shard = parse_keyspace_shard(text)
        return ks, shard
    return check_keyspace(text), None


WORKFLOW_ACTION_PATTERN = r"^[A-Za-z][A-Za-z0-9_:()|-]{0,99}$"
WORKFLOW_STATUSES = ("running", "succeeded", "failed", "interrupted")
RECOVERY_RESULTS = ("running", "succeeded", "failed", "blocked", "skipped", "cancelled")


def _parse_count(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TopoInvalidArgumentError(f"want a whole number, got {_json_type(value)}")
    if not 1 <= value <= 10000:
        raise TopoInvalidArgumentError(f"{value} out of range 1-10000")
    return value


def _parse_text(value: Any) -> str:
    text = _string(value)
    if not 0 < len(text) <= 1000:
        raise TopoInvalidArgumentError("want between 1 and 1000 characters")
    return text


TASK_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,47}$"
SOURCE_ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}(?:/" + SHARD_PATTERN + ")?$"
MAX_TASK_FILE_BYTES = 1 << 20
# `<task>-`db`.`table``, DM's sharding DDL lock id.
LOCK_ID_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,47}-`[^`\x00-\x1f]{1,64}`\.`[^`\x00-\x1f]{1,64}`$"


def _parse_task_file(value: Any) -> str:
    """The text of a task file (the CLI reads the file and sends its text)."""
    if not isinstance(value, str):
        raise TopoInvalidArgumentError(f"want the task file's YAML text, got {_json_type(value)}")
    if not value.strip():
        raise TopoInvalidArgumentError("the task file is empty")
    if len(value.encode()) > MAX_TASK_FILE_BYTES:
        raise TopoInvalidArgumentError(f"the task file is larger than {MAX_TASK_FILE_BYTES} bytes")
    return value


def _parse_pattern(pattern: str, what: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = _string(value, what)
        if not re.fullmatch(pattern[1:-1], text):
            raise TopoInvalidArgumentError(f"malformed {what} {text!r}")
        return text

    return parse


def _parse_source_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TopoInvalidArgumentError(f"want an array of source ids, got {_json_type(value)}")
    parse = _parse_pattern(SOURCE_ID_PATTERN, "source id")
    return tuple(dict.fromkeys(parse(v) for v in value))


# A worker's or service instance's name (`orchestrator worker --name`, `--instance-id`).
MEMBER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def _parse_member_name_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TopoInvalidArgumentError(f"want an array of member names, got {_json_type(value)}")
    parse = _parse_pattern(MEMBER_NAME_PATTERN, "member name")
    return tuple(dict.fromkeys(parse(v) for v in value))


_KIND_PARSERS: dict[str, Callable[[Any], Any]] = {
    "keyspace": _parse_keyspace,
    "keyspace_shard": _parse_keyspace_shard,
    "alias": _parse_alias,
    "alias_list": _parse_alias_list,
    "host": _parse_host,
    "port": _parse_port,
    "bool": _parse_bool,
    "duration": parse_duration,
    "tablet_type": _parse_tablet_type,
    "durability": _parse_enum(DURABILITY_POLICIES, "durability policy"),
    "text": _parse_text,
    "task_file": _parse_task_file,
    "task_name": _parse_pattern(TASK_NAME_PATTERN, "task name"),
    "source_id": _parse_pattern(SOURCE_ID_PATTERN, "source id"),
    "source_list": _parse_source_list,
    "source_op": _parse_enum(("create", "stop", "show"), "operation"),
    "lock_id": _parse_pattern(LOCK_ID_PATTERN, "DDL lock id (want task-`db`.`table`)"),
    "scope": _parse_scope,
    "count": _parse_count,
    "workflow_action": _parse_pattern(WORKFLOW_ACTION_PATTERN, "workflow action"),
    "workflow_status": _parse_enum(WORKFLOW_STATUSES, "workflow status"),
    "recovery_result": _parse_enum(RECOVERY_RESULTS, "recovery result"),
    "cell": _parse_pattern(r"^[a-z0-9][a-z0-9_]{0,62}$", "cell"),
    "member_name": _parse_pattern(MEMBER_NAME_PATTERN, "member name"),
    "member_name_list": _parse_member_name_list,
    "member_type": _parse_enum(("master", "worker"), "member type"),
}

_KIND_SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "keyspace": lambda: {"type": "string", "pattern": KEYSPACE_PATTERN},
    "keyspace_shard": lambda: {"type": "string", "pattern": KEYSPACE_SHARD_PATTERN},
    "alias": lambda: {"type": "string", "pattern": ALIAS_PATTERN},
    "alias_list": lambda: {"type": "array", "items": {"type": "string", "pattern": ALIAS_PATTERN}},
    "host": lambda: {"type": "string", "pattern": HOST_PATTERN},
    "port": lambda: {"type": "integer", "minimum": 1, "maximum": 65535},
    "bool": lambda: {"type": "boolean"},
    "duration": lambda: {
        "oneOf": [
            {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION_S},
            {"type": "string", "pattern": DURATION_PATTERN},
        ]
    },
    "tablet_type": lambda: {"type": "string", "enum": list(NON_PRIMARY_TYPES)},
    "durability": lambda: {"type": "string", "enum": list(DURABILITY_POLICIES)},
    "text": lambda: {"type": "string", "minLength": 1, "maxLength": 1000},
    "task_file": lambda: {"type": "string", "minLength": 1, "maxLength": MAX_TASK_FILE_BYTES},
    "task_name": lambda: {"type": "string", "pattern": TASK_NAME_PATTERN},
    "source_id": lambda: {"type": "string", "pattern": SOURCE_ID_PATTERN},
    "source_list": lambda: {
        "type": "array",
        "items": {"type": "string", "pattern": SOURCE_ID_PATTERN},
    },
    "source_op": lambda: {"type": "string", "enum": ["create", "stop", "show"]},
    "lock_id": lambda: {"type": "string", "pattern": LOCK_ID_PATTERN},
    "scope": lambda: {
        "type": "string",
        "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_.]{0,62}(?:/" + SHARD_PATTERN + ")?$",
    },
    "count": lambda: {"type": "integer", "minimum": 1, "maximum": 10000},
    "workflow_action": lambda: {"type": "string", "pattern": WORKFLOW_ACTION_PATTERN},
    "workflow_status": lambda: {"type": "string", "enum": list(WORKFLOW_STATUSES)},
    "recovery_result": lambda: {"type": "string", "enum": list(RECOVERY_RESULTS)},
    "cell": lambda: {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_]{0,62}$"},
    "member_name": lambda: {"type": "string", "pattern": MEMBER_NAME_PATTERN},
    "member_name_list": lambda: {
        "type": "array",
        "items": {"type": "string", "pattern": MEMBER_NAME_PATTERN},
    },
    "member_type": lambda: {"type": "string", "enum": ["master", "worker"]},
}


# -- commands --------------------------------------------------------------------------------


@dataclass
class CommandContext:
    """What a handler runs with: the service, where progress goes, and who asked.

    `deadline` (epoch seconds) is when the client gives up: a workflow must not start acting
    after it (its lock wait is bounded by it), so a command whose client left never runs later.
    """

    service: Service
    progress: ProgressFn | None = None
    peer: str = ""
    deadline: float | None = None
    # Filled in while a workflow runs (from its progress events), for error details.
    workflow_id: str | None = None

    def emit(self, event: dict[str, Any]) -> None:
        if self.workflow_id is None and event.get("workflow_id"):
            self.workflow_id = str(event["workflow_id"])
        if self.progress is not None:
            self.progress(event)


Handler = Callable[[CommandContext, dict[str, Any]], Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    args: tuple[Arg, ...]
    handler: Handler
    # Runs a workflow that reports steps (worth streaming).
    workflow: bool = False
    description: str = ""
    examples: tuple[str, ...] = field(default_factory=tuple)
    # Changes nothing (Get*, Show*, Find*): like the GET routes, it needs no bearer token.
    read: bool = False

    def arg(self, name: str) -> Arg:
        return next(a for a in self.args if a.name == name)

    def body_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {a.name: a.json_schema() for a in self.args},
            "required": [a.name for a in self.args if a.required],
            "additionalProperties": False,
        }


def parse_args(cmd: Command, body: Any) -> dict[str, Any]:
    """Validate a JSON body against the command's arguments; return parsed values (defaults
    filled in). Any problem is an ArgumentError saying which field and why."""
    if not isinstance(body, dict):
        raise ArgumentError(f"{cmd.name}: the body must be a JSON object, got {_json_type(body)}")
    known = {a.name for a in cmd.args}
    unknown = sorted(set(body) - known)
    if unknown:
        raise ArgumentError(
            f"{cmd.name}: unknown argument(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(known)) or 'none'}",
            field=unknown[0],
        )
    out: dict[str, Any] = {}
    for a in cmd.args:
        if a.name not in body or body[a.name] is None:
            if a.required:
                raise ArgumentError(f"{cmd.name}: {a.name} is required", field=a.name)
            out[a.name] = a.parse(a.default) if a.default is not None else None
            continue
        out[a.name] = a.parse(body[a.name])
    return out


COMMANDS: dict[str, Command] = {}


def command(
    name: str, summary: str, *args: Arg, workflow: bool = False, description: str = "",
    examples: tuple[str, ...] = (), read: bool = False,
) -> Callable[[Handler], Handler]:  # fmt: skip
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, summary, tuple(args), fn, workflow, description, examples,
                                 read)  # fmt: skip
        return fn

    return register


def get_command(name: str) -> Command:
    try:
        return COMMANDS[name]
    except KeyError:
        raise UnknownCommandError(
            f"unknown command {name!r}; commands: {', '.join(sorted(COMMANDS))}"
        ) from None


# Common arguments.
KS_SHARD = Arg("keyspace_shard", "keyspace_shard", "the shard, as <keyspace>/<shard>",
               required=True, cli="positional")  # fmt: skip
TABLET = Arg("alias", "alias", "the tablet alias, <cell>-<uid>", required=True, cli="positional")
WAIT_REPLICAS = Arg(
    "wait_replicas_timeout", "duration",
    'how long to wait for replicas to catch up (seconds, or a duration like "30s")',
    default=30,
)  # fmt: skip
