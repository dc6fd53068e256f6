"""Steps shared by several workflows: reading a shard, probing its tablets, promoting,
repointing, journaling, and publishing the new primary to the topology.

Each function does one thing, says why in its docstring, and is idempotent, so a workflow rerun
after a crash converges instead of piling up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from mysqlctl.client import ServerStatus
from mysqlctl.errors import MysqlError
from mysqlctl.gtid import Position
from mysqlctl.journal import JournalEntry, wait_for_journal_entry, write_journal_entry
from topo.errors import NoNodeError
from topo.kv import Fence
from topo.records import Durability, Keyspace, Shard, Tablet, TabletType
from topo.store import TopoStore
from workflows.candidates import Candidate
from workflows.env import WorkflowEnv
from workflows.errors import ActiveReparentsDisabledError, InvalidArgumentError

T = TypeVar("T")

# Tablet tag set by StopReplication: replication is stopped on purpose, do not restart it.
STOPPED_BY_OPERATOR_TAG = "replication_stopped_by"
# Tablet tag set when a returning tablet holds transactions the shard never had: it stays
# spare until an operator rebuilds it (the value says which GTIDs).
NEEDS_REBUILD_TAG = "needs_rebuild"
# Tablet tag set by BeginMaintenance: a JSON window {"until", "reason", "by", "started_at"}.
# Until then nothing recovers the tablet and a PlannedReparentShard does not wait for it; past
# `until` the window is over by itself (EndMaintenance removes the tag sooner).
MAINTENANCE_TAG = "maintenance"


@dataclass(frozen=True)
class Maintenance:
    """A maintenance window of one tablet (from its `maintenance` tag)."""

    until: float
    reason: str = ""
    by: str = ""
    started_at: float = 0.0

    def to_tag(self) -> str:
        return json.dumps(
            {"until": self.until, "reason": self.reason, "by": self.by,
             "started_at": self.started_at}, sort_keys=True,
        )  # fmt: skip

    def to_dict(self, now: float | None = None) -> dict[str, object]:
        now = time.time() if now is None else now
        return {
            "until": iso8601(self.until), "reason": self.reason, "by": self.by,
            "started_at": iso8601(self.started_at) if self.started_at else None,
            "active": self.until > now, "left_s": round(max(0.0, self.until - now), 1),
        }  # fmt: skip

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        return (
            f"under maintenance until {iso8601(self.until)} ({max(0.0, self.until - now):.0f}s"
            f" left): {self.reason or 'no reason given'}" + (f" (by {self.by})" if self.by else "")
        )


def iso8601(epoch: float) -> str:
    """UTC, to the second: 2026-12-01T21:13:38Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def maintenance_of(tablet: Tablet) -> Maintenance | None:
    """The tablet's maintenance window as recorded (open or already expired), if any."""
    raw = tablet.tags.get(MAINTENANCE_TAG)
    if not raw:
        return None
    try:
        data = json.loads(raw)
        return Maintenance(
            until=float(data["until"]), reason=str(data.get("reason", "")),
            by=str(data.get("by", "")), started_at=float(data.get("started_at", 0.0)),
        )  # fmt: skip
    except (ValueError, TypeError, KeyError):
        return None  # unreadable: no window (a window must never be open by accident)


def active_maintenance(tablet: Tablet, now: float | None = None) -> Maintenance | None:
    """The tablet's maintenance window if it is still open at `now` (default: the clock)."""
    window = maintenance_of(tablet)
    now = time.time() if now is None else now
    return window if window is not None and window.until > now else None


@dataclass(frozen=True)
class ShardView:
    """A consistent read of one shard: its keyspace, Shard record and tablets."""

    keyspace: Keyspace
    shard: Shard
    tablets: tuple[Tablet, ...]
    unreadable_cells: tuple[str, ...] = ()

    def tablet(self, alias: str) -> Tablet:
        for t in self.tablets:
            if t.alias == alias:
                return t
        raise InvalidArgumentError(
            f"{alias} is not a tablet of shard {self.shard.key} (its tablets: "
            f"{', '.join(t.alias for t in self.tablets) or 'none'})",
            tablet=alias,
        )

    @property
    def primary(self) -> Tablet | None:
        if self.shard.primary_alias is None:
            return None
        return next((t for t in self.tablets if t.alias == self.shard.primary_alias), None)

    @property
    def semi_sync(self) -> bool:
        return self.keyspace.durability_policy == Durability.SEMI_SYNC


def refuse_if_active_reparents_disabled(env: WorkflowEnv, action: str) -> None:
    if env.settings.disable_active_reparents:
        raise ActiveReparentsDisabledError(
            f"{action} refused: active reparents are disabled (disable_active_reparents); "
            "an external tool owns failover, use TabletExternallyReparented"
        )


async def read_shard(store: TopoStore, keyspace: str, shard: str) -> ShardView:
    """Keyspace, Shard and tablets; a cell that cannot be read is skipped and reported."""
    ks = await store.get_keyspace(keyspace)
    sh = await store.get_shard(keyspace, shard)
    tablets, unreadable = await store.shard_tablets(keyspace, shard)
    return ShardView(ks, sh, tuple(tablets), tuple(unreadable))


async def check_tablets_in_shard(
    store: TopoStore, keyspace: str, shard: str, aliases: Iterable[str | None]
) -> None:
    """Every named tablet belongs to the shard: checked before a workflow record or a lock
    exists, so a typo in an alias costs nothing and leaves no trace."""
    named = [a for a in aliases if a]
    if not named:
        return
    view = await read_shard(store, keyspace, shard)
    for alias in named:
        view.tablet(alias)


async def gather_map(
    items: Mapping[str, Awaitable[T]],
) -> dict[str, T | BaseException]:
    """Await all in parallel; a failure of one becomes its value, never a failure of all."""
    keys = list(items)
    results = await asyncio.gather(*items.values(), return_exceptions=True)
    return dict(zip(keys, results, strict=True))


async def probe(
    env: WorkflowEnv, tablets: Iterable[Tablet], *, timeout: float | None = None
) -> dict[str, ServerStatus | BaseException]:
    """Every tablet's status, in parallel, each bounded by the probe timeout."""
    limit = timeout or env.settings.probe_timeout
    return await gather_map({t.alias: env.mysql(t).status(timeout=limit) for t in tablets})


def candidate(tablet: Tablet, status: ServerStatus | BaseException | None) -> Candidate:
    """Candidate-choice view of a tablet from its probed status."""
    if not isinstance(status, ServerStatus):
        return Candidate(tablet.alias, tablet.cell, tablet.type, None)
    repl = status.replication
    applied = repl.applied if repl is not None else status.position
    return Candidate(
        alias=tablet.alias,
        cell=tablet.cell,
        type=tablet.type,
        position=applied,
        errant=status.errant,
        lag_seconds=repl.lag_seconds if repl is not None else None,
    )


def replication_stopped(status: ServerStatus | BaseException | None) -> bool:
    """Configured as a replica but with both threads stopped: someone stopped it on purpose."""
    if not isinstance(status, ServerStatus) or status.replication is None:
        return False
    return not status.replication.io_running and not status.replication.sql_running


def replica_semi_sync(view: ShardView, tablet: Tablet) -> bool:
    """Only `replica` tablets acknowledge semi-sync commits (rdonly and spare never do)."""
    return view.semi_sync and tablet.type in (TabletType.REPLICA, TabletType.PRIMARY)


async def repoint(
    env: WorkflowEnv,
    view: ShardView,
    tablet: Tablet,
    primary: Tablet,
    *,
    from_own_binlog: bool = False,
    start: bool = True,
) -> None:
    """Make `tablet` a read-only replica of `primary` (semi-sync replica side per durability).

    Read-only first: a replica that takes application writes grows errant transactions."""
    client = env.mysql(tablet)
    await client.set_read_only(True)
    await client.set_replication_source(
        primary.mysql_host,
        primary.mysql_port,
        user=env.creds.user,
        password=env.creds.password,
        semi_sync=replica_semi_sync(view, tablet),
        from_own_binlog=from_own_binlog,
        start=start,
    )


async def repoint_all(
    env: WorkflowEnv,
    view: ShardView,
    tablets: Iterable[Tablet],
    primary: Tablet,
    *,
    own_binlog: Iterable[str] = (),
    leave_stopped: Iterable[str] = (),
) -> dict[str, BaseException]:
    """Repoint every tablet in parallel; returns the failures by alias (empty: all ok).

    Tablets named in `own_binlog` (a former primary) resume after their own binlog history;
    tablets in `leave_stopped` (replication deliberately stopped before) are repointed but
    not started, as an operator who stopped them would expect.
    """
    own, stopped = set(own_binlog), set(leave_stopped)
    results = await gather_map(
        {
            t.alias: repoint(
                env, view, t, primary, from_own_binlog=t.alias in own,
                start=t.alias not in stopped,
            )
            for t in tablets
        }
    )  # fmt: skip
    return {a: r for a, r in results.items() if isinstance(r, BaseException)}


async def write_journal(
    env: WorkflowEnv, primary: Tablet, action: str, position: Position
) -> JournalEntry:
    """The reparent journal row on the new primary; replicas are verified by waiting for it."""
    return await write_journal_entry(env.mysql(primary), action, primary.alias, position)


async def wait_journal(
    env: WorkflowEnv, tablets: Iterable[Tablet], entry: JournalEntry, timeout: float
) -> dict[str, BaseException]:
    """Wait for the journal row on each tablet; returns the failures by alias (empty: all ok)."""
    results = await gather_map(
        {t.alias: wait_for_journal_entry(env.mysql(t), entry.time_created_ns, timeout)
         for t in tablets}
    )  # fmt: skip
    return {a: r for a, r in results.items() if isinstance(r, BaseException)}


async def publish_new_primary(
    env: WorkflowEnv,
    view: ShardView,
    new_primary: Tablet,
    fence: Fence,
    *,
    new_types: Mapping[str, TabletType],
) -> Shard:
    """Record the new primary in topology: its Tablet (type and term), the other tablets' new
    types, the Shard record, then the serving graph. Every write is fenced by the shard lock.

    The term start time orders competing claims, so a stale claim can be told from a new one.

    A tablet made `spare` here (an old primary that did not answer) keeps `replica` as its
    target type, so the health checks bring it back as a replica when it answers again (unless
    it holds transactions the shard never had). Every tablet whose role changes loses the
    StopReplication tag: its replication was set up anew by the reparent.
    """
    term = time.time_ns()

    def untagged(t: Tablet) -> dict[str, str]:
        return {k: v for k, v in t.tags.items() if k != STOPPED_BY_OPERATOR_TAG}

    def promote_record(t: Tablet) -> Tablet:
        return dataclasses.replace(
            t, type=TabletType.PRIMARY, primary_term_start_time=term, target_type=None,
            tags=untagged(t),
        )  # fmt: skip

    def retype(new_type: TabletType) -> Callable[[Tablet], Tablet | None]:
        target = TabletType.REPLICA if new_type == TabletType.SPARE else None

        def fn(t: Tablet) -> Tablet | None:
            if (t.type, t.primary_term_start_time, t.target_type, t.tags) == (
                new_type, 0, target, untagged(t)
            ):  # fmt: skip
                return None
            return dataclasses.replace(
                t, type=new_type, primary_term_start_time=0, target_type=target,
                tags=untagged(t),
            )  # fmt: skip

        return fn

    store = env.store
    updates = [store.update_tablet_fields(new_primary.alias, promote_record, fence)]
    for alias, new_type in new_types.items():
        if alias != new_primary.alias:
            updates.append(store.update_tablet_fields(alias, retype(new_type), fence))
    results = await asyncio.gather(*updates, return_exceptions=True)
    for r in results:
        # A tablet deleted meanwhile is not worth failing a reparent over; anything else is.
        if isinstance(r, BaseException) and not isinstance(r, NoNodeError):
            raise r

    def shard_fn(s: Shard) -> Shard:
        return dataclasses.replace(
            s, primary_alias=new_primary.alias, primary_term_start_time=term,
            is_primary_serving=True,
        )  # fmt: skip

    shard = await store.update_shard_fields(view.shard.keyspace, view.shard.name, shard_fn, fence)
    await store.rebuild_serving_graph(view.shard.keyspace, fence)
    return shard


async def set_primary_serving(
    env: WorkflowEnv, view: ShardView, serving: bool, fence: Fence
) -> None:
    """Mark the primary serving or not in the Shard record and the serving graph (PRS takes
    it out before demotion so clients stop sending writes it would refuse)."""

    def fn(s: Shard) -> Shard | None:
        return (
            None
            if s.is_primary_serving == serving
            else dataclasses.replace(s, is_primary_serving=serving)
        )

    await env.store.update_shard_fields(view.shard.keyspace, view.shard.name, fn, fence)
    await env.store.rebuild_serving_graph(view.shard.keyspace, fence)


def describe_errors(errors: Mapping[str, BaseException]) -> str:
    return "; ".join(f"{alias}: {_short(e)}" for alias, e in sorted(errors.items()))


def _short(e: BaseException) -> str:
    if isinstance(e, MysqlError | TimeoutError):
        return str(e) or type(e).__name__
    return f"{type(e).__name__}: {e}"
