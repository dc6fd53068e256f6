"""The command registry: every vtctl-style command, its arguments and its handler, in one place.

The same table serves three readers, so there is one way to do each thing:

- the HTTP API (`POST /api/v1/commands/<Name>`): `parse_args` validates a JSON body strictly
  (unknown fields, wrong types, malformed names are refused with `ArgumentError`), then the
  handler runs with a `CommandContext`;
- the OpenAPI document: `Arg.json_schema()` and `Command.body_schema()`;
- the CLI (`orchestrator ctl <Name> ...`): positionals and `--flags` are generated from the
  arguments (see `orchestrator.ctl`).

This module is imported by the CLI, so it stays light: handlers import workflows and the API's
views inside their bodies.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator import events
from topo.alias import TabletAlias, check_keyspace, parse_keyspace_shard
from topo.errors import InvalidArgumentError as TopoInvalidArgumentError

if TYPE_CHECKING:
    from orchestrator.service import Service
    from workflows.result import ReparentResult

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
    tablet_type (non-primary types), durability, text.
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


def _parse_text(value: Any) -> str:
    text = _string(value)
    if not 0 < len(text) <= 1000:
        raise TopoInvalidArgumentError("want between 1 and 1000 characters")
    return text


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
}


# -- commands --------------------------------------------------------------------------------


@dataclass
class CommandContext:
    """What a handler runs with: the service, where progress goes, and who asked."""

    service: Service
    progress: ProgressFn | None = None
    peer: str = ""
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
    examples: tuple[str, ...] = (),
) -> Callable[[Handler], Handler]:  # fmt: skip
    def register(fn: Handler) -> Handler:
        COMMANDS[name] = Command(name, summary, tuple(args), fn, workflow, description, examples)
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


# -- helpers for handlers ----------------------------------------------------------------------


async def _run_reparent(
    ctx: CommandContext,
    action: str,
    event_args: dict[str, Any],
    run: Callable[[ProgressFn], Awaitable[ReparentResult]],
) -> dict[str, Any]:
    """Run one reparent workflow: events (started, then succeeded or failed) around it,
    metrics (count, duration, lock wait), progress to the caller."""
    from orchestrator import metrics

    started = time.monotonic()
    ok = False
    events = ctx.service.events
    try:
        async with events.reparent(action, event_args) as ev:

            def progress(event: dict[str, Any]) -> None:
                if event.get("workflow_id"):
                    ev.extra["workflow_id"] = event["workflow_id"]
                ctx.emit(event)

            result = await run(metrics.lock_wait_observer(progress))
            ev.result = result.to_dict()
        ok = True
        return ev.result
    finally:
        metrics.observe_reparent(action, ok, time.monotonic() - started)


def _event_args(args: Mapping[str, Any], peer: str) -> dict[str, Any]:
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items() if v is not None}
    out["source"] = "api"
    if peer:
        out["peer"] = peer
    return out


# -- topology commands -----------------------------------------------------------------------


@command(
    "CreateKeyspace", "Create a keyspace.",
    Arg("keyspace", "keyspace", "the keyspace name", required=True, cli="positional"),
    Arg("durability_policy", "durability", "none (asynchronous) or semi_sync", default="none"),
    examples=("CreateKeyspace commerce --durability-policy semi_sync",),
)  # fmt: skip
async def _create_keyspace(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator.api import views
    from topo.records import Durability, Keyspace

    ks = await ctx.service.store.create_keyspace(
        Keyspace(name=a["keyspace"], durability_policy=Durability(a["durability_policy"]))
    )
    return views.record(ks)


@command(
    "CreateShard", "Create a shard in an existing keyspace.", KS_SHARD,
    examples=("CreateShard commerce/0", "CreateShard commerce/-80"),
)  # fmt: skip
async def _create_shard(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator.api import views
    from topo.records import Shard

    ks, shard = a["keyspace_shard"]
    return views.record(await ctx.service.store.create_shard(Shard(keyspace=ks, name=shard)))


@command(
    "AddTablet", "Register a MySQL/MariaDB server as a (non-primary) tablet of a shard.",
    TABLET,
    KS_SHARD,
    Arg("mysql_host", "host", "host name or address of the server", required=True),
    Arg("mysql_port", "port", "MySQL port of the server", required=True),
    Arg("type", "tablet_type", "replica, rdonly, spare or drained", default="replica"),
    Arg("hostname", "host", "the machine's host name, informational"),
    description="The tablet joins the serving graph (as a replica, if typed so). Make a "
    "tablet primary with InitShardPrimary, PlannedReparentShard or TabletExternallyReparented.",
    examples=("AddTablet zone1-101 commerce/0 --mysql-host db1 --mysql-port 3306 --type replica",),
)  # fmt: skip
async def _add_tablet(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator.api import views
    from topo.records import Tablet, TabletType

    ks, shard = a["keyspace_shard"]
    store = ctx.service.store
    tablet = Tablet(
        alias=a["alias"], keyspace=ks, shard=shard, type=TabletType(a["type"]),
        mysql_host=a["mysql_host"], mysql_port=a["mysql_port"], hostname=a["hostname"] or "",
    )  # fmt: skip
    async with _lock(ctx, ks, shard, "AddTablet") as lock:
        created = await store.create_tablet(tablet)
        await store.rebuild_serving_graph(ks, lock.fence)
    return views.record(created)


@command(
    "DeleteTablet", "Remove a tablet from the topology (the server itself is left alone).",
    TABLET,
    Arg("allow_primary", "bool", "also delete the shard's primary (the shard is left "
        "without a primary)", default=False),
    examples=("DeleteTablet zone1-103",),
)  # fmt: skip
async def _delete_tablet(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from workflows.errors import PreconditionError

    store = ctx.service.store
    tablet = await store.get_tablet(a["alias"])
    async with _lock(ctx, tablet.keyspace, tablet.shard, "DeleteTablet") as lock:
        shard = await store.get_shard(tablet.keyspace, tablet.shard)
        was_primary = shard.primary_alias == tablet.alias
        if was_primary and not a["allow_primary"]:
            raise PreconditionError(
                f"{tablet.alias} is the primary of {shard.key}; reparent first, or pass "
                "allow_primary to delete it anyway",
                tablet=tablet.alias,
            )
        await store.delete_tablet(tablet.alias)
        if was_primary:
            await store.update_shard_fields(
                tablet.keyspace, tablet.shard,
                lambda s: dataclasses.replace(s, primary_alias=None, primary_term_start_time=0)
                if s.primary_alias == tablet.alias else None,
                lock.fence,
            )  # fmt: skip
        await store.rebuild_serving_graph(tablet.keyspace, lock.fence)
    return {"alias": tablet.alias, "deleted": True, "was_primary": was_primary}


@command(
    "ChangeTabletType", "Change a non-primary tablet's type (replica, rdonly, spare, drained).",
    TABLET,
    Arg("type", "tablet_type", "the new type: replica, rdonly, spare or drained",
        required=True, cli="positional"),
    description="A primary is never changed here, nor is a tablet made primary: that is what "
    "the reparent commands are for. The health checks keep the new type (no automatic return "
    "to an earlier one).",
    examples=("ChangeTabletType zone1-103 rdonly",),
)  # fmt: skip
async def _change_tablet_type(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator.api import views
    from topo.records import Durability, TabletType
    from workflows.errors import PreconditionError

    store = ctx.service.store
    new_type = TabletType(a["type"])
    tablet = await store.get_tablet(a["alias"])
    warnings: list[str] = []
    async with _lock(ctx, tablet.keyspace, tablet.shard, "ChangeTabletType") as lock:
        shard = await store.get_shard(tablet.keyspace, tablet.shard)
        tablet = await store.get_tablet(a["alias"])
        if tablet.type == TabletType.PRIMARY or shard.primary_alias == tablet.alias:
            raise PreconditionError(
                f"{tablet.alias} is the primary of {shard.key}: move the primary away with "
                "PlannedReparentShard first",
                tablet=tablet.alias,
            )
        old_type = tablet.type
        updated = await store.update_tablet_fields(
            tablet.alias,
            lambda t: None if t.type == new_type and t.target_type is None
            else dataclasses.replace(t, type=new_type, target_type=None),
            lock.fence,
        )  # fmt: skip
        if old_type != new_type:
            await store.rebuild_serving_graph(tablet.keyspace, lock.fence)
            # Only `replica` tablets acknowledge semi-sync commits.
            keyspace = await store.get_keyspace(tablet.keyspace)
            acks = TabletType.REPLICA in (old_type, new_type)
            if keyspace.durability_policy == Durability.SEMI_SYNC and acks:
                try:
                    await ctx.service.env.mysql(updated).set_semi_sync(
                        primary=False, replica=new_type == TabletType.REPLICA
                    )
                except Exception as e:
                    warnings.append(f"could not set semi-sync on {tablet.alias}: {e}")
    if old_type != new_type:
        await ctx.service.events.publish_quietly(
            events.TABLET_TYPE_CHANGED,
            {"alias": tablet.alias, "keyspace": tablet.keyspace, "shard": tablet.shard,
             "old_type": old_type.value, "new_type": new_type.value, "source": "api"},
        )  # fmt: skip
    return {**views.record(updated), "old_type": old_type.value, "changed": old_type != new_type,
            "warnings": warnings}  # fmt: skip


def _lock(ctx: CommandContext, keyspace: str, shard: str, action: str) -> Any:
    """The shard lock for a short topology change (serialised with reparents of the shard)."""
    from topo.lock import ShardLock

    return ShardLock(
        ctx.service.store, keyspace, shard, action=action,
        reason=f"{action} via API" + (f" from {ctx.peer}" if ctx.peer else ""),
        timeout=ctx.service.settings.lock_timeout_s,
    )  # fmt: skip


# -- reparents -------------------------------------------------------------------------------


@command(
    "InitShardPrimary", "Make a tablet the primary of a new shard and the others its replicas.",
    KS_SHARD,
    Arg("primary", "alias", "the tablet to make primary", required=True, cli="either"),
    Arg("force", "bool", "re-initialise even if the shard already has a primary",
        default=False),
    WAIT_REPLICAS,
    workflow=True,
    examples=("InitShardPrimary commerce/0 --primary zone1-101",
              "InitShardPrimary commerce/0 zone1-101"),
)  # fmt: skip
async def _init_shard_primary(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from workflows.init_shard_primary import ACTION, InitShardPrimaryOptions, init_shard_primary

    ks, shard = a["keyspace_shard"]
    opts = InitShardPrimaryOptions(ks, shard, a["primary"], force=a["force"],
                                   wait_replicas_timeout=a["wait_replicas_timeout"])  # fmt: skip
    return await _run_reparent(
        ctx, ACTION, _event_args({"keyspace": ks, "shard": shard, **_rest(a)}, ctx.peer),
        lambda progress: init_shard_primary(ctx.service.env, opts, progress=progress),
    )  # fmt: skip


@command(
    "PlannedReparentShard", "Move the primary role from a healthy primary to another tablet.",
    KS_SHARD,
    Arg("new_primary", "alias", "the tablet to promote (default: the most advanced healthy "
        "replica in the primary's cell)"),
    Arg("avoid_primary", "alias", "move the primary off this tablet, only if it is the primary"),
    Arg("expected_primary", "alias", "refuse unless this tablet is the current primary"),
    WAIT_REPLICAS,
    Arg("allow_cross_cell_promotion", "bool", "allow choosing a primary-elect in another cell",
        default=False),
    workflow=True,
    examples=("PlannedReparentShard commerce/0 --new-primary zone1-102",
              "PlannedReparentShard commerce/0 --avoid-primary zone1-101 "
              "--wait-replicas-timeout 30s"),
)  # fmt: skip
async def _planned_reparent(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from workflows.planned_reparent import ACTION, PlannedReparentOptions, planned_reparent_shard

    ks, shard = a["keyspace_shard"]
    opts = PlannedReparentOptions(
        ks, shard, new_primary=a["new_primary"], avoid_primary=a["avoid_primary"],
        expected_primary=a["expected_primary"],
        wait_replicas_timeout=a["wait_replicas_timeout"],
        allow_cross_cell_promotion=a["allow_cross_cell_promotion"],
    )  # fmt: skip
    return await _run_reparent(
        ctx, ACTION, _event_args({"keyspace": ks, "shard": shard, **_rest(a)}, ctx.peer),
        lambda progress: planned_reparent_shard(ctx.service.env, opts, progress=progress),
    )  # fmt: skip


@command(
    "EmergencyReparentShard", "Promote a new primary when the current one is dead or unreachable.",
    KS_SHARD,
    Arg("new_primary", "alias", "the tablet to promote (default: the most advanced candidate)"),
    Arg("ignore_replicas", "alias_list", "tablets not to wait for (comma-separated on the "
        "command line)"),
    WAIT_REPLICAS,
    Arg("prevent_cross_cell_promotion", "bool", "only promote a tablet in the old primary's "
        "cell", default=False),
    workflow=True,
    examples=("EmergencyReparentShard commerce/0",
              "EmergencyReparentShard commerce/0 --new-primary zone1-102 "
              "--ignore-replicas zone1-103"),
)  # fmt: skip
async def _emergency_reparent(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from workflows.emergency_reparent import (
        ACTION,
        EmergencyReparentOptions,
        emergency_reparent_shard,
    )

    ks, shard = a["keyspace_shard"]
    opts = EmergencyReparentOptions(
        ks, shard, new_primary=a["new_primary"], ignore_replicas=a["ignore_replicas"] or (),
        wait_replicas_timeout=a["wait_replicas_timeout"],
        prevent_cross_cell_promotion=a["prevent_cross_cell_promotion"],
    )  # fmt: skip
    return await _run_reparent(
        ctx, ACTION, _event_args({"keyspace": ks, "shard": shard, **_rest(a)}, ctx.peer),
        lambda progress: emergency_reparent_shard(ctx.service.env, opts, progress=progress),
    )  # fmt: skip


@command(
    "TabletExternallyReparented",
    "Record that an outside tool made this tablet its shard's primary.",
    TABLET,
    workflow=True,
    description="Allowed even with disable_active_reparents (the outside tool owns failover).",
    examples=("TabletExternallyReparented zone1-102",),
)  # fmt: skip
async def _externally_reparented(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from workflows.externally_reparented import (
        ACTION,
        ExternallyReparentedOptions,
        tablet_externally_reparented,
    )

    opts = ExternallyReparentedOptions(a["alias"])
    return await _run_reparent(
        ctx, ACTION, _event_args({"tablet": a["alias"]}, ctx.peer),
        lambda progress: tablet_externally_reparented(ctx.service.env, opts, progress=progress),
    )  # fmt: skip


@command(
    "ReparentTablet", "Point a replica at its shard's current primary and start replication.",
    TABLET, workflow=True, examples=("ReparentTablet zone1-103",),
)  # fmt: skip
async def _reparent_tablet(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import metrics
    from workflows.replication import ACTION_REPARENT_TABLET, reparent_tablet

    started = time.monotonic()
    ok = False
    try:
        result = await reparent_tablet(
            ctx.service.env, a["alias"], progress=metrics.lock_wait_observer(ctx.emit)
        )
        ok = True
        return result
    finally:
        metrics.observe_reparent(ACTION_REPARENT_TABLET, ok, time.monotonic() - started)


# -- replication -----------------------------------------------------------------------------


@command("StartReplication", "Start replication on a replica.", TABLET,
         examples=("StartReplication zone1-102",))  # fmt: skip
async def _start_replication(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from workflows.replication import start_replication

    return await start_replication(ctx.service.env, a["alias"])


@command("StopReplication", "Stop replication on a replica (both threads).", TABLET,
         examples=("StopReplication zone1-102",))  # fmt: skip
async def _stop_replication(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from workflows.replication import stop_replication

    return await stop_replication(ctx.service.env, a["alias"])


@command(
    "ShardReplicationPositions",
    "Every tablet of a shard: type, position, replication source and lag.",
    KS_SHARD, examples=("ShardReplicationPositions commerce/0",),
)  # fmt: skip
async def _shard_replication_positions(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator.api import views

    ks, shard = a["keyspace_shard"]
    return await views.replication_positions(ctx.service, ks, shard)


# -- reads for scripts -----------------------------------------------------------------------


@command("GetKeyspace", "A keyspace record.",
         Arg("keyspace", "keyspace", "the keyspace name", required=True, cli="positional"),
         examples=("GetKeyspace commerce",))  # fmt: skip
async def _get_keyspace(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator.api import views

    return await views.keyspace(ctx.service, a["keyspace"])


@command("GetShard", "A shard record: primary, serving state, tablets, lock.", KS_SHARD,
         examples=("GetShard commerce/0",))  # fmt: skip
async def _get_shard(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator.api import views

    return await views.shard(ctx.service, *a["keyspace_shard"])


@command("GetTablet", "A tablet record with its latest health check.", TABLET,
         examples=("GetTablet zone1-101",))  # fmt: skip
async def _get_tablet(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator.api import views

    return await views.tablet(ctx.service, a["alias"])


# -- locks -----------------------------------------------------------------------------------


@command("ShowLocks", "Every shard lock held now: action, holder, age.",
         examples=("ShowLocks",))  # fmt: skip
async def _show_locks(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator.api import views

    return await views.locks(ctx.service)


@command(
    "UnlockShard", "Break a shard lock held by someone else (last resort; audited).",
    KS_SHARD,
    Arg("force", "bool", "must be true: breaking a lock can let two workflows act at once",
        required=True),
    Arg("reason", "text", "why (kept in the audit log)", required=True),
    description="Revokes the holder's lease; its next fenced topology write fails, so it "
    "stops. Use only when the holder is known to be stuck.",
    examples=("UnlockShard commerce/0 --force --reason 'holder hung'",),
)  # fmt: skip
async def _unlock_shard(ctx: CommandContext, a: dict[str, Any]) -> Any:
    if a["force"] is not True:
        raise ArgumentError("UnlockShard needs force: true", field="force")
    ks, shard = a["keyspace_shard"]
    service = ctx.service
    by = service.settings.instance_id + (f" for {ctx.peer}" if ctx.peer else "")
    info = await service.store.force_unlock(ks, shard, reason=a["reason"], by=by)
    return {"keyspace": ks, "shard": shard, "unlocked": True, "reason": a["reason"],
            "holder": info.to_dict()}  # fmt: skip


def _rest(a: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in a.items() if k != "keyspace_shard"}
