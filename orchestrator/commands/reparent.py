"""Reparent commands: InitShardPrimary, PlannedReparentShard, EmergencyReparentShard,
TabletExternallyReparented and ReparentTablet, each a thin wrapper that builds the workflow's
options record and runs it with events and metrics around it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.commands.registry import (
    KS_SHARD,
    TABLET,
    WAIT_REPLICAS,
    Arg,
    CommandContext,
    ProgressFn,
    command,
)

if TYPE_CHECKING:
    from workflows.result import ReparentResult

LOCK_TIMEOUT = Arg(
    "lock_timeout", "duration",
    'how long to wait for the shard lock (seconds, or a duration like "30s"; default: the '
    "service's lock_timeout_s)",
)  # fmt: skip


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
    changed = True
    events = ctx.service.events
    try:
        async with events.reparent(action, event_args) as ev:

            def progress(event: dict[str, Any]) -> None:
                if event.get("workflow_id"):
                    ev.extra["workflow_id"] = event["workflow_id"]
                ctx.emit(event)

            result = await run(metrics.lock_wait_observer(progress))
            changed = result.changed
            ev.result = result.to_dict()
        ok = True
        return ev.result
    finally:
        metrics.observe_reparent(action, ok, time.monotonic() - started, changed=changed)


def _event_args(args: Mapping[str, Any], peer: str) -> dict[str, Any]:
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in args.items() if v is not None}
    out["source"] = "api"
    if peer:
        out["peer"] = peer
    return out


@command(
    "InitShardPrimary", "Make a tablet the primary of a new shard and the others its replicas.",
    KS_SHARD,
    Arg("primary", "alias", "the tablet to make primary", required=True, cli="either"),
    Arg("force", "bool", "re-initialise even if the shard already has a primary",
        default=False),
    WAIT_REPLICAS,
    LOCK_TIMEOUT,
    workflow=True,
    examples=("InitShardPrimary commerce/0 --primary zone1-101",
              "InitShardPrimary commerce/0 zone1-101"),
)  # fmt: skip
async def _init_shard_primary(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from workflows.init_shard_primary import ACTION, InitShardPrimaryOptions, init_shard_primary

    ks, shard = a["keyspace_shard"]
    opts = InitShardPrimaryOptions(ks, shard, a["primary"], force=a["force"],
                                   wait_replicas_timeout=a["wait_replicas_timeout"],
                                   lock_timeout=a["lock_timeout"], deadline=ctx.deadline)  # fmt: skip
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
    LOCK_TIMEOUT,
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
        lock_timeout=a["lock_timeout"], deadline=ctx.deadline,
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
    LOCK_TIMEOUT,
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
        lock_timeout=a["lock_timeout"], deadline=ctx.deadline,
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


def _rest(a: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in a.items() if k != "keyspace_shard"}
