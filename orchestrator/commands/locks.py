"""Shard locks: show who holds them, and break one as a last resort (audited)."""

from __future__ import annotations

from typing import Any

from orchestrator.commands.registry import KS_SHARD, Arg, ArgumentError, CommandContext, command


@command("ShowLocks", "Every shard lock held now: action, holder, age.",
         examples=("ShowLocks",), read=True)  # fmt: skip
async def _show_locks(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views

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
