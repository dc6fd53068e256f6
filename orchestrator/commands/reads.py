"""Reads for scripts: the same records as the API's GET routes (`orchestrator.views`)."""

from __future__ import annotations

from typing import Any

from orchestrator.commands.registry import (
    KS_SHARD,
    TABLET,
    Arg,
    ArgumentError,
    CommandContext,
    command,
)


@command("GetKeyspace", "A keyspace record.",
         Arg("keyspace", "keyspace", "the keyspace name", required=True, cli="positional"),
         examples=("GetKeyspace commerce",), read=True)  # fmt: skip
async def _get_keyspace(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    return await views.keyspace(ctx.service, a["keyspace"])


@command("GetShard", "A shard record: primary, serving state, tablets, lock, recoveries.",
         KS_SHARD, examples=("GetShard commerce/0",), read=True)  # fmt: skip
async def _get_shard(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    return await views.shard(ctx.service, *a["keyspace_shard"])


@command("GetTablet", "A tablet record with its latest health check.", TABLET,
         examples=("GetTablet zone1-101",), read=True)  # fmt: skip
async def _get_tablet(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    return await views.tablet(ctx.service, a["alias"])


@command("GetKeyspaces", "Every keyspace: durability, automatic recovery, shards.",
         examples=("GetKeyspaces",), read=True)  # fmt: skip
async def _get_keyspaces(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    return await views.keyspaces_with_shards(ctx.service)


@command("FindAllShardsInKeyspace", "Every shard of a keyspace: primary, serving state.",
         Arg("keyspace", "keyspace", "the keyspace name", required=True, cli="positional"),
         examples=("FindAllShardsInKeyspace commerce",), read=True)  # fmt: skip
async def _find_all_shards(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    doc = await views.shards(ctx.service, a["keyspace"])
    return {"keyspace": doc["keyspace"], "shards": {s["name"]: s for s in doc["shards"]}}


@command(
    "GetTablets", "Every tablet with its latest health check and problems (patronictl-style).",
    Arg("keyspace", "keyspace", "only this keyspace"),
    Arg("shard", "text", "only this shard (with --keyspace)"),
    Arg("cell", "cell", "only this cell"),
    examples=("GetTablets", "GetTablets --keyspace commerce --shard 0"), read=True,
)  # fmt: skip
async def _get_tablets(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views
    from topo.alias import check_shard

    shard = a["shard"]
    if shard is not None:
        check_shard(shard)
        if a["keyspace"] is None:
            raise ArgumentError("shard needs keyspace", field="shard")
    return await views.tablets_with_health(ctx.service, keyspace=a["keyspace"], shard=shard,
                                           cell=a["cell"])  # fmt: skip


@command(
    "GetWorkflows", "Workflow runs, newest first, filtered by shard, action and status.",
    Arg("scope", "scope", "KEYSPACE or KEYSPACE/SHARD", cli="positional"),
    Arg("action", "workflow_action", "only this action (PlannedReparentShard, ...)"),
    Arg("status", "workflow_status", "only runs in this state"),
    Arg("limit", "count", "at most this many (default 100)", default=100),
    examples=("GetWorkflows commerce/0 --action PlannedReparentShard --status failed",),
    read=True,
)  # fmt: skip
async def _get_workflows(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    ks, shard = a["scope"] if a["scope"] is not None else (None, None)
    return await views.workflows(ctx.service, keyspace=ks, shard=shard, status=a["status"],
                                 action=a["action"], limit=a["limit"])  # fmt: skip
