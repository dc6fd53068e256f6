"""Per-tablet replication commands: ReparentTablet, StartReplication, StopReplication, and the
read-only ShardReplicationPositions.

ReparentTablet takes the shard lock (it must not race a reparent that is moving the primary);
Start/StopReplication act on one tablet only and, like Vitess's, do not lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from mysqlctl.client import ServerStatus
from topo.records import Tablet, TabletType
from workflows.common import NEEDS_REBUILD_TAG, STOPPED_BY_OPERATOR_TAG, probe, read_shard, repoint
from workflows.env import ProgressFn, WorkflowEnv
from workflows.errors import PreconditionError
from workflows.run import WorkflowRun

ACTION_REPARENT_TABLET = "ReparentTablet"
__all__ = ["NEEDS_REBUILD_TAG", "STOPPED_BY_OPERATOR_TAG"]  # re-exported from workflows.common


@dataclass(frozen=True)
class ReplicaState:
    alias: str
    type: str
    position: str | None
    replicating_from: str | None
    io_running: bool | None
    sql_running: bool | None
    lag_seconds: float | None
    read_only: bool | None
    errant: str | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


async def reparent_tablet(
    env: WorkflowEnv, alias: str, *, progress: ProgressFn | None = None, wait_s: float = 10.0
) -> dict[str, Any]:
    """Point an orphaned (or wrongly sourced) replica at its shard's primary and start it."""
    tablet = await env.store.get_tablet(alias)
    async with WorkflowRun(
        env, ACTION_REPARENT_TABLET, tablet.keyspace, tablet.shard, {"tablet": alias},
        progress=progress,
    ) as run:  # fmt: skip
        view = await run.step("read_shard", read_shard(env.store, tablet.keyspace, tablet.shard))
        tablet = view.tablet(alias)
        primary = view.primary
        if primary is None:
            raise PreconditionError(f"shard {view.shard.key} has no primary to replicate from")
        if tablet.alias == primary.alias or tablet.type == TabletType.PRIMARY:
            raise PreconditionError(f"{alias} is the shard's primary", tablet=alias)
        before = await run.step("check_tablet", env.mysql(tablet).status())
        if not before.errant.is_empty():
            raise PreconditionError(
                f"{alias} has errant transactions {before.errant} that the shard never had; "
                "it must be rebuilt, not repointed",
                tablet=alias,
            )
        run.lock.check()
        # Resume after the tablet's own binlog: with gtid_strict_mode the primary then refuses
        # (error 1236) a tablet holding a transaction it never had, such as a former primary
        # that died with an unreplicated write. MariaDB positions alone cannot show that once
        # the new primary has moved past the same sequence number.
        await run.step(
            "set_replication_source",
            repoint(env, view, tablet, primary, from_own_binlog=True),
            detail=f"{alias} -> {primary.alias}",
        )
        status = await run.step("verify_replicating", _wait_io_running(env, tablet, wait_s))
        await _mark_stopped_by_operator(env, alias, False)
        result = {
            "tablet": alias,
            "primary": primary.alias,
            "position": status.position.encode(),
        }
        run.set_result(result)
        return result


async def _wait_io_running(env: WorkflowEnv, tablet: Tablet, wait_s: float) -> ServerStatus:
    """Replication counts as working once both threads run without error.

    Replication stopped for good (see ``ReplicationStatus.stalled``, e.g. error 1236 from a
    primary that lacks the tablet's GTIDs) fails at once rather than after `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        status = await env.mysql(tablet).status()
        repl = status.replication
        if repl is not None and repl.io_running and repl.sql_running:
            return status
        stalled = repl.stalled() if repl is not None else None
        if repl is not None and stalled is not None:
            err = repl.last_io_error if repl.sql_running else repl.last_sql_error
            raise PreconditionError(
                f"{tablet.alias} cannot replicate: {stalled}" + (f": {err}" if err else ""),
                tablet=tablet.alias,
            )
        if time.monotonic() > deadline:
            err = (repl.last_io_error or repl.last_sql_error) if repl else "not configured"
            raise PreconditionError(
                f"{tablet.alias} is not replicating after {wait_s}s: {err or 'still connecting'}",
                tablet=tablet.alias,
            )
        await asyncio.sleep(0.05)


async def start_replication(env: WorkflowEnv, alias: str) -> dict[str, Any]:
    tablet = await env.store.get_tablet(alias)
    if tablet.type == TabletType.PRIMARY:
        raise PreconditionError(
            f"{alias} is a primary; it has no replication to start", tablet=alias
        )
    await env.mysql(tablet).start_replication()
    await _mark_stopped_by_operator(env, alias, False)
    return {"tablet": alias, "replication": "started"}


async def stop_replication(env: WorkflowEnv, alias: str) -> dict[str, Any]:
    """Stop replication and say so in the tablet's record, so the health checks leave it
    stopped (an operator stopping a replica for maintenance means it) until StartReplication
    or ReparentTablet."""
    tablet = await env.store.get_tablet(alias)
    shard = await env.store.get_shard(tablet.keyspace, tablet.shard)
    if tablet.type == TabletType.PRIMARY or shard.primary_alias == alias:
        raise PreconditionError(
            f"{alias} is the primary of {shard.key}: it replicates from nobody, so there is no "
            "replication to stop (StopReplication is for replicas)",
            tablet=alias,
        )
    await env.mysql(tablet).stop_replication()
    await _mark_stopped_by_operator(env, alias, True)
    return {"tablet": alias, "replication": "stopped"}


async def _mark_stopped_by_operator(env: WorkflowEnv, alias: str, stopped: bool) -> None:
    def fn(t: Tablet) -> Tablet | None:
        if bool(t.tags.get(STOPPED_BY_OPERATOR_TAG)) == stopped:
            return None
        tags = {k: v for k, v in t.tags.items() if k != STOPPED_BY_OPERATOR_TAG}
        if stopped:
            tags[STOPPED_BY_OPERATOR_TAG] = "StopReplication"
        return dataclasses.replace(t, tags=tags)

    await env.store.update_tablet_fields(alias, fn)


async def shard_replication_positions(
    env: WorkflowEnv, keyspace: str, shard: str
) -> list[ReplicaState]:
    """Each tablet's type, position, source and lag (an unreachable tablet says why)."""
    view = await read_shard(env.store, keyspace, shard)
    statuses = await probe(env, view.tablets)
    out = []
    for t in view.tablets:
        s = statuses[t.alias]
        if not isinstance(s, ServerStatus):
            out.append(ReplicaState(t.alias, t.type.value, None, None, None, None, None, None,
                                    None, error=str(s) or type(s).__name__))  # fmt: skip
            continue
        r = s.replication
        out.append(
            ReplicaState(
                alias=t.alias,
                type=t.type.value,
                position=s.position.encode(),
                replicating_from=f"{r.source_host}:{r.source_port}" if r else None,
                io_running=r.io_running if r else None,
                sql_running=r.sql_running if r else None,
                lag_seconds=r.lag_seconds if r else None,
                read_only=s.read_only,
                errant=None if s.errant.is_empty() else s.errant.encode(),
            )
        )
    return out


async def transactions_missing_on(env: WorkflowEnv, tablet: Tablet, primary: Tablet) -> str:
    """The transactions `tablet` holds that `primary` never had, readable ("" if none): what
    keeps a returning old primary from rejoining as a replica (it must be rebuilt).

    MariaDB positions keep one GTID per domain, so a server that diverged can look contained
    once the new primary has moved past the same sequence number; `gtid_binlog_state` keeps the
    last GTID of every (domain, server) pair, which shows exactly which ones are missing."""
    mine, theirs = env.mysql(tablet), env.mysql(primary)
    flavor = await mine.flavor()
    if flavor.name == "MariaDB":
        query = "SELECT @@GLOBAL.gtid_binlog_state AS state"
        have, has = await asyncio.gather(mine.fetch_one(query), theirs.fetch_one(query))
        own = _binlog_state(str((have or {}).get("state") or ""))
        primary_state = _binlog_state(str((has or {}).get("state") or ""))
        missing = []
        for (domain, server_id), seq in sorted(own.items()):
            known = primary_state.get((domain, server_id), 0)
            if known < seq:
                first = f"{domain}-{server_id}-{known + 1}"
                missing.append(first if known + 1 == seq else f"{first}..{seq}")
        return ", ".join(missing)
    status, position = await asyncio.gather(mine.status(), theirs.primary_position())
    extra = status.position.difference(position)
    return "" if extra.is_empty() else extra.encode()


def _binlog_state(text: str) -> dict[tuple[int, int], int]:
    """`0-101-5,0-102-9` -> {(0, 101): 5, (0, 102): 9}."""
    out: dict[tuple[int, int], int] = {}
    for item in text.replace("\n", ",").split(","):
        if item.strip():
            domain, server_id, seq = (int(x) for x in item.strip().split("-"))
            out[(domain, server_id)] = seq
    return out
