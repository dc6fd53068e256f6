"""Topology commands: create keyspaces and shards, add, delete and retype tablets.

Each change is short and runs under the shard lock, so it is serialised with reparents of the
same shard; the serving graph is rebuilt under the same lock.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from orchestrator.commands.registry import KS_SHARD, TABLET, Arg, CommandContext, command


@command(
    "CreateKeyspace", "Create a keyspace.",
    Arg("keyspace", "keyspace", "the keyspace name", required=True, cli="positional"),
    Arg("durability_policy", "durability", "none (asynchronous) or semi_sync", default="none"),
    examples=("CreateKeyspace commerce --durability-policy semi_sync",),
)  # fmt: skip
async def _create_keyspace(ctx: CommandContext, a: dict[str, Any]) -> Any:
    from orchestrator import views
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
    from orchestrator import views
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
    from orchestrator import views
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
    from orchestrator import views
    from topo.records import Durability, TabletType
    from workflows.common import NEEDS_REBUILD_TAG
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
        # An operator's type is final: no target type, and a `needs_rebuild` mark (a tablet
        # that came back with errant GTIDs) is the operator's to lift, here.
        updated = await store.update_tablet_fields(
            tablet.alias,
            lambda t: None if t.type == new_type and t.target_type is None
            and NEEDS_REBUILD_TAG not in t.tags
            else dataclasses.replace(t, type=new_type, target_type=None,
                                     tags={k: v for k, v in t.tags.items()
                                           if k != NEEDS_REBUILD_TAG}),
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
        from orchestrator import events

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
