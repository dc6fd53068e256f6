"""EmergencyReparentShard: the primary is dead or unreachable; promote the most advanced tablet
without losing an acknowledged transaction.

Steps:
  1. refuse if active reparents are disabled
  2. lock the shard, read it; if its primary answers as a writable primary (an earlier ERS,
     perhaps this one before a crash, finished the job) and no other new primary is named:
     done, no change
  3. in parallel, on every tablet not ignored: stop the IO thread (nothing new arrives from a
     primary that may come back) and read its status; fence the old primary read-only if it
     answers, and any replica an interrupted reparent left writable
  4. wait for every reachable replica to apply what it has received
  5. with semi_sync durability, refuse unless every tablet that could have acknowledged a
     commit answered (otherwise the only copy of an acknowledged write may be out of reach)
  6. choose the elect by GTID set: never one with errant transactions, never a non-promotable
     type, the old primary's cell when cross-cell promotion is prevented; if the elect is behind
     the most advanced tablet, let it catch up from that tablet first
  7. promote the elect (the result reports the window from the old primary's last healthy
     health check to here, when a health checker runs next to the workflow)
  8. in parallel: publish (elect -> primary, old primary -> spare), repoint the reachable
     replicas, write the journal row
  9. wait for the journal row on every repointed replica
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from mysqlctl.client import ServerStatus
from mysqlctl.errors import MysqlError
from mysqlctl.gtid import Position
from topo.alias import TabletAlias
from topo.records import Tablet, TabletType
from workflows.candidates import Candidate, ErsChoice, choose_ers_elect
from workflows.common import (
    ShardView,
    candidate,
    check_tablets_in_shard,
    describe_errors,
    gather_map,
    publish_new_primary,
    read_shard,
    refuse_if_active_reparents_disabled,
    repoint,
    repoint_all,
    wait_journal,
    write_journal,
)
from workflows.env import ProgressFn, WorkflowEnv
from workflows.errors import PartialFailureError, PreconditionError
from workflows.result import ReparentResult
from workflows.run import WorkflowRun

ACTION = "EmergencyReparentShard"
STOP_IO_EXTRA_S = 3.0


@dataclass(frozen=True)
class EmergencyReparentOptions:
    keyspace: str
    shard: str
    new_primary: str | None = None
    ignore_replicas: tuple[str, ...] = ()
    wait_replicas_timeout: float = 30.0
    prevent_cross_cell_promotion: bool = False
    # As PlannedReparentOptions: lock wait (None: the setting) and the caller's deadline.
    lock_timeout: float | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        for alias in self.ignore_replicas:
            TabletAlias.parse(alias)


async def emergency_reparent_shard(
    env: WorkflowEnv, opts: EmergencyReparentOptions, *, progress: ProgressFn | None = None
) -> ReparentResult:
    refuse_if_active_reparents_disabled(env, ACTION)
    args = {k: v for k, v in vars(opts).items()
            if k not in ("keyspace", "shard", "lock_timeout", "deadline")}  # fmt: skip
    args["ignore_replicas"] = list(opts.ignore_replicas)
    await check_tablets_in_shard(
        env.store, opts.keyspace, opts.shard, (opts.new_primary, *opts.ignore_replicas)
    )
    async with WorkflowRun(
        env, ACTION, opts.keyspace, opts.shard, args, progress=progress,
        lock_timeout=opts.lock_timeout, deadline=opts.deadline,
    ) as run:  # fmt: skip
        view = await run.step("read_shard", read_shard(env.store, opts.keyspace, opts.shard))
        for alias in opts.ignore_replicas:
            view.tablet(alias)
        old = view.primary
        if old is not None and opts.new_primary in (None, old.alias):
            working = await run.step("check_primary_dead", _works_as_primary(env, old))
            if working:
                # A live primary: an earlier ERS (perhaps this one, rerun after a crash) has
                # done the job, or the primary came back. A second failover would fence a
                # healthy primary for nothing.
                run.note("nothing_to_do", f"{old.alias} answers as a writable primary")
                return run.result(
                    new_primary=old.alias, old_primary=old.alias, changed=False,
                    warnings=(f"{old.alias} answers as a writable primary; name new_primary to "
                              "move the primary anyway",),
                )  # fmt: skip
        ignored = set(opts.ignore_replicas)
        others = [t for t in view.tablets if t.alias not in ignored and t is not old]

        run.lock.check()
        statuses = await run.step(
            "stop_replication_and_probe", _stop_io_and_probe(env, others, old)
        )
        await env.faults.hit("ers.after_stop_io")
        reachable = [t for t in others if isinstance(statuses[t.alias], ServerStatus)]
        unreachable = {a: s for a, s in statuses.items() if isinstance(s, BaseException)}
        if unreachable:
            run.note("unreachable", describe_errors(unreachable))
        old_answered = old is not None and isinstance(statuses.get(old.alias), ServerStatus)

        applied = await run.step(
            "wait_relay_logs_applied",
            gather_map(
                {t.alias: env.mysql(t).wait_relay_applied(opts.wait_replicas_timeout)
                 for t in reachable if _is_replica(statuses[t.alias])}
            ),
        )  # fmt: skip
        stuck = {a: r for a, r in applied.items() if isinstance(r, BaseException)}
        if view.semi_sync and not old_answered:
            _check_semi_sync_coverage(view, old, ignored, {**unreachable, **stuck})

        cands = _candidates(view, reachable, statuses, applied, old if old_answered else None)
        choice = choose_ers_elect(
            [c for c in cands if c.alias not in stuck],
            old_primary_cell=old.cell if old else None,
            new_primary=opts.new_primary,
            prevent_cross_cell=opts.prevent_cross_cell_promotion,
        )
        elect = view.tablet(choice.elect)
        run.note(
            "elect",
            f"{elect.alias}" + (f", catching up from {choice.most_advanced} first"
                                if choice.needs_catch_up else ", most advanced"),
        )  # fmt: skip
        if choice.needs_catch_up:
            top = next(c.position for c in cands if c.alias == choice.most_advanced)
            assert top is not None
            await run.step(
                "elect_catches_up",
                _catch_up(env, view, elect, view.tablet(choice.most_advanced), top, opts),
            )

        await env.faults.hit("ers.before_promote")
        run.lock.check()
        position = await run.step(
            "promote_elect", env.mysql(elect).promote(semi_sync=view.semi_sync)
        )
        promoted_ms = round((time.monotonic() - run.started) * 1000, 1)
        promoted_at = time.time()
        last_healthy = env.last_healthy(old.alias) if old and env.last_healthy else None
        await env.faults.hit("ers.after_promote")

        new_types = {old.alias: TabletType.SPARE} if old is not None else {}
        replicas = [t for t in reachable if t.alias != elect.alias]
        _, repoint_failures, entry = await asyncio.gather(
            run.step(
                "publish_topology",
                publish_new_primary(env, view, elect, run.fence, new_types=new_types),
            ),
            run.step("repoint_replicas", repoint_all(env, view, replicas, elect)),
            run.step("write_journal", write_journal(env, elect, ACTION, position)),
        )
        await env.faults.hit("ers.after_topology")
        late = await run.step(
            "wait_journal_on_replicas",
            wait_journal(
                env, [t for t in replicas if t.alias not in repoint_failures], entry,
                opts.wait_replicas_timeout,
            ),
        )  # fmt: skip
        problems = {**repoint_failures, **late}
        result = run.result(
            new_primary=elect.alias,
            old_primary=old.alias if old else None,
            changed=True,
            position=position.encode(),
            journal_time_ns=entry.time_created_ns,
            write_unavailable_ms=promoted_ms,
            warnings=tuple(f"{a}: {e}" for a, e in sorted({**unreachable, **problems}.items())),
            primary_last_healthy_at=last_healthy,
            unavailable_window_ms=round((promoted_at - last_healthy) * 1000, 1)
            if last_healthy
            else None,
        )
        if problems:
            raise PartialFailureError(
                f"{elect.alias} is the new primary, but some replicas are not replicating from "
                f"it yet: {describe_errors(problems)}"
            )
        return result


async def _works_as_primary(env: WorkflowEnv, tablet: Tablet) -> bool:
    """The tablet answers, is typed primary, writable and replicates from nobody."""
    if tablet.type != TabletType.PRIMARY:
        return False
    try:
        status = await env.mysql(tablet).status(timeout=env.settings.probe_timeout)
    except (MysqlError, TimeoutError):
        return False
    return not status.read_only and status.replication is None


def _is_replica(status: ServerStatus | BaseException) -> bool:
    return isinstance(status, ServerStatus) and status.replication is not None


async def _stop_io_and_probe(
    env: WorkflowEnv, others: list[Tablet], old: Tablet | None
) -> dict[str, ServerStatus | BaseException]:
    """Stop the IO thread on every replica and fence the old primary, then read statuses."""
    timeout = env.settings.probe_timeout

    async def replica(t: Tablet) -> ServerStatus:
        client = env.mysql(t)
        status = await client.status(timeout=timeout)
        if status.replication is not None:
            # STOP SLAVE IO_THREAD takes about 2 s while the IO thread is reconnecting to a
            # source that silently vanished (a network cut, not a refused connection).
            await client.stop_io_thread(timeout=timeout + STOP_IO_EXTRA_S)
            status = await client.status(timeout=timeout)
        if not status.read_only:
            # Promoted by an interrupted reparent: fenced, so that promoting another tablet
            # never leaves two writable servers (it is promoted again if it is the elect).
            await client.set_read_only(True, timeout=timeout)
            status = await client.status(timeout=timeout)
        return status

    async def old_primary(t: Tablet) -> ServerStatus:
        client = env.mysql(t)
        await client.set_read_only(True, timeout=timeout)
        return await client.status(timeout=timeout)

    work = {t.alias: replica(t) for t in others}
    if old is not None:
        work[old.alias] = old_primary(old)
    return await gather_map(work)


def _check_semi_sync_coverage(
    view: ShardView, old: Tablet | None, ignored: set[str], missing: dict[str, BaseException]
) -> None:
    """Every acknowledged commit reached at least one semi-sync replica. Unless all of those
    answered (and applied what they received), one of the missing may hold the only copy."""
    ackers = [
        t.alias for t in view.tablets
        if t.type == TabletType.REPLICA and (old is None or t.alias != old.alias)
    ]  # fmt: skip
    blind = sorted(a for a in ackers if a in missing or a in ignored)
    if blind:
        why = "; ".join(f"{a}: {'ignored' if a in ignored else missing[a]}" for a in blind)
        raise PreconditionError(
            "durability is semi_sync and these replicas, which may hold the only copy of an "
            f"acknowledged transaction, did not answer: {why}. Nothing was changed; bring them "
            "back, or the old primary, and retry",
            tablet=blind[0],
        )


def _candidates(
    view: ShardView,
    reachable: list[Tablet],
    statuses: dict[str, ServerStatus | BaseException],
    applied: dict[str, Position | BaseException],
    old: Tablet | None,
) -> list[Candidate]:
    """Candidate records with each replica's fully applied position. A fenced old primary takes
    part as a catch-up source only (its type is not promotable)."""
    out = []
    for t in reachable:
        c = candidate(t, statuses[t.alias])
        pos = applied.get(t.alias)
        if isinstance(pos, Position):
            c = dataclasses.replace(c, position=pos)
        out.append(c)
    if old is not None:
        out.append(candidate(old, statuses[old.alias]))
    return out


async def _catch_up(
    env: WorkflowEnv,
    view: ShardView,
    elect: Tablet,
    source: Tablet,
    target: Position,
    opts: EmergencyReparentOptions,
) -> None:
    """Replicate the elect from the most advanced tablet until it holds everything."""
    try:
        await repoint(env, view, elect, source, from_own_binlog=False)
        await env.mysql(elect).wait_for_position(target, opts.wait_replicas_timeout)
        await env.mysql(elect).stop_replication()
    except (MysqlError, TimeoutError) as e:
        raise PreconditionError(
            f"{elect.alias} could not catch up from {source.alias} ({e}); nothing was promoted",
            tablet=elect.alias,
        ) from e


__all__ = ["ACTION", "EmergencyReparentOptions", "ErsChoice", "emergency_reparent_shard"]
