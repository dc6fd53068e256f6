"""Replication commands: start and stop a replica's replication, and every tablet's
position in a shard."""

from __future__ import annotations

from typing import Any

from orchestrator.commands.registry import KS_SHARD, TABLET, CommandContext, command


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
    KS_SHARD, examples=("ShardReplicationPositions commerce/0",), read=True,
)  # fmt: skip
async def _shard_replication_positions(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

    ks, shard = a["keyspace_shard"]
    return await views.replication_positions(ctx.service, ks, shard)
