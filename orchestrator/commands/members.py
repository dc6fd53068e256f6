"""Cluster membership commands, with DM's names (`migration.members` does the work):
list-member, offline-member, transfer-source."""

from __future__ import annotations

from typing import Any

from orchestrator.commands.registry import Arg, CommandContext, command


def _stores(ctx: CommandContext) -> tuple[Any, Any]:
    from migration.members import MemberStore
    from migration.store import MigrationStore

    store = ctx.service.store
    return MigrationStore(store.kv, store.root), MemberStore(store.kv, store.root)


@command(
    "list-member", "Service instances (the leader marked) and workers (free, bound, draining, "
    "offline; their subtasks, address, version, uptime).",
    Arg("leader", "bool", "only the leader", default=False),
    Arg("master", "bool", "only the service instances", default=False),
    Arg("worker", "bool", "only the workers", default=False),
    Arg("name", "member_name_list", "only these members (repeatable)"),
    examples=("list-member", "list-member --worker", "list-member --name w1 --name w2"),
    read=True,
)  # fmt: skip
async def _list_member(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from migration.members import list_members

    mstore, members = _stores(ctx)
    return await list_members(mstore, members, leader=a["leader"], master=a["master"],
                              worker=a["worker"], names=list(a["name"] or ()))  # fmt: skip


@command(
    "offline-member", "Take a member offline: a worker drains (its subtasks commit their batch "
    "and move to other workers) and deregisters; a leading service instance resigns.",
    Arg("type", "member_type", "master or worker", required=True),
    Arg("name", "member_name", "the member's name", required=True),
    description="Waits until it is done (at most 10 s). A drained worker process exits (the "
    "worker of an `orchestrator serve` stops until that instance restarts); a resigned service "
    "instance serves on as a follower.",
    examples=("offline-member --type worker --name w1", "offline-member --type master "
              "--name orc-1"),
)  # fmt: skip
async def _offline_member(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from migration.members import offline_member

    mstore, members = _stores(ctx)
    return await offline_member(mstore, members, a["type"], a["name"])


@command(
    "transfer-source", "Move a source's subtasks to a named live worker (a new epoch fences the "
    "old one).",
    Arg("source", "source_id", "the source id", required=True, cli="positional"),
    Arg("worker", "member_name", "the worker to run it", required=True, cli="positional"),
    examples=("transfer-source commerce/-80 w2",),
)  # fmt: skip
async def _transfer_source(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from migration.members import transfer_source

    mstore, _members = _stores(ctx)
    return await transfer_source(mstore, a["source"], a["worker"])
