"""Recovery control: pause and resume automatic recovery, maintenance windows, and the
recovery history (`orchestrator.health.control`, `orchestrator.health.recovery`)."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from orchestrator.commands.registry import TABLET, Arg, ArgumentError, CommandContext, command

SCOPE = Arg("scope", "scope", "KEYSPACE or KEYSPACE/SHARD (default: everything)",
            cli="positional")  # fmt: skip


def _who(ctx: CommandContext) -> str:
    return ctx.service.settings.instance_id + (f" for {ctx.peer}" if ctx.peer else "")


@command(
    "SetRecoveries", "Pause or resume automatic recovery, globally or for a keyspace or shard.",
    SCOPE,
    Arg("disable", "bool", "pause automatic recovery", default=False),
    Arg("enable", "bool", "resume automatic recovery", default=False),
    Arg("reason", "text", "why (shown with the pause in /api/v1/health, GetShard, "
        "GetRecoveries)"),
    description="Stored in etcd: every instance and the next leader honour it at once. A "
    "keyspace's pause is its auto_recovery field. While paused, problems are still reported and "
    "each recovery that would have run is recorded as blocked with the reason. "
    "disable_active_reparents is a separate, static switch.",
    examples=("SetRecoveries --disable --reason 'network maintenance'",
              "SetRecoveries --disable commerce/0 --reason 'restoring a backup'",
              "SetRecoveries --enable"),
)  # fmt: skip
async def _set_recoveries(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views
    from orchestrator.health.control import set_recoveries

    if a["disable"] == a["enable"]:
        raise ArgumentError("SetRecoveries needs exactly one of disable or enable",
                            field="disable")  # fmt: skip
    ks, shard = a["scope"] if a["scope"] is not None else (None, None)
    control = await set_recoveries(
        ctx.service.store, enable=a["enable"], keyspace=ks, shard=shard,
        reason=a["reason"] or "", by=_who(ctx),
    )  # fmt: skip
    keyspaces = await ctx.service.store.list_keyspaces()
    out: dict[str, Any] = {
        "scope": "global" if ks is None else (ks if shard is None else f"{ks}/{shard}"),
        "recoveries": "enabled" if a["enable"] else "paused",
        "recovery_control": control.to_dict(keyspaces),
    }
    if ks is not None and shard is not None:
        out["shard"] = await views.shard_recoveries(ctx.service, ks, shard)
    return out


@command(
    "BeginMaintenance", "Put a tablet under a maintenance window that ends by itself.",
    TABLET,
    Arg("duration", "duration", 'how long: seconds or a duration like "30m" (at most 24h)',
        required=True),
    Arg("reason", "text", "why (shown in health and GetTablet)", required=True),
    description="Until the window ends (or EndMaintenance), nothing recovers the tablet and "
    "PlannedReparentShard does not wait for it if it does not answer (it is left out of the "
    "reparent and repointed later by the health checks). Its problems are still reported.",
    examples=("BeginMaintenance zone1-103 --duration 30m --reason 'kernel upgrade'",),
)  # fmt: skip
async def _begin_maintenance(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views
    from workflows.common import MAINTENANCE_TAG, Maintenance

    now = time.time()
    window = Maintenance(until=now + a["duration"], reason=a["reason"], by=_who(ctx),
                         started_at=now)  # fmt: skip
    updated = await ctx.service.store.update_tablet_fields(
        a["alias"], lambda t: dataclasses.replace(t, tags={**t.tags, MAINTENANCE_TAG: window.to_tag()})
    )  # fmt: skip
    return {"alias": updated.alias, "maintenance": views.maintenance_doc(updated)}


@command(
    "EndMaintenance", "End a tablet's maintenance window now.", TABLET,
    examples=("EndMaintenance zone1-103",),
)  # fmt: skip
async def _end_maintenance(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from workflows.common import MAINTENANCE_TAG, maintenance_of

    before = await ctx.service.store.get_tablet(a["alias"])
    window = maintenance_of(before)
    await ctx.service.store.update_tablet_fields(
        a["alias"],
        lambda t: None if MAINTENANCE_TAG not in t.tags
        else dataclasses.replace(t, tags={k: v for k, v in t.tags.items() if k != MAINTENANCE_TAG}),
    )  # fmt: skip
    return {"alias": a["alias"], "ended": window is not None,
            "was": window.to_dict() if window is not None else None}  # fmt: skip


@command(
    "GetRecoveries",
    "Recent automatic recoveries: what was detected, what ran, the result, what is blocked and "
    "why, and the anti-flapping window left.",
    SCOPE,
    Arg("result", "recovery_result", "only these results (succeeded, failed, blocked, ...)"),
    Arg("limit", "count", "at most this many entries (default 50)", default=50),
    read=True,
    description="Recoveries run on the leader and each is recorded in etcd (the newest 500, "
    "none older than 7 days), so every instance lists the same history, also after the leader "
    "that ran them died; with it the shard-level state kept in etcd (last failover, "
    "anti-flapping window, pauses).",
    examples=("GetRecoveries", "GetRecoveries commerce/0 --result blocked"),
)  # fmt: skip
async def _get_recoveries(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    ks, shard = a["scope"] if a["scope"] is not None else (None, None)
    return await views.recoveries(ctx.service, keyspace=ks, shard=shard, result=a["result"],
                                  limit=a["limit"])  # fmt: skip
