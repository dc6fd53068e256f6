"""Reads for scripts: the same records as the API's GET routes (`orchestrator.views`)."""

from __future__ import annotations

from typing import Any

from orchestrator.commands.registry import KS_SHARD, TABLET, Arg, CommandContext, command


@command("GetKeyspace", "A keyspace record.",
         Arg("keyspace", "keyspace", "the keyspace name", required=True, cli="positional"),
         examples=("GetKeyspace commerce",))  # fmt: skip
async def _get_keyspace(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    return await views.keyspace(ctx.service, a["keyspace"])


@command("GetShard", "A shard record: primary, serving state, tablets, lock.", KS_SHARD,
         examples=("GetShard commerce/0",))  # fmt: skip
async def _get_shard(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    return await views.shard(ctx.service, *a["keyspace_shard"])


@command("GetTablet", "A tablet record with its latest health check.", TABLET,
         examples=("GetTablet zone1-101",))  # fmt: skip
async def _get_tablet(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    return await views.tablet(ctx.service, a["alias"])
