"""PlannedReparentShard: move the primary role from a healthy primary to another tablet.

Steps (the write-unavailability window is marked; only what must be inside it is):
  1. refuse if active reparents are disabled
  2. lock the shard, read it; check the expected primary
  3. every tablet must answer before anything is touched, except those under a maintenance
     window (BeginMaintenance), which are left out of the reparent (not repointed, not waited
     for); the error names both ways out
  4. choose the primary-elect (named, or the most advanced healthy replica in the primary's
     cell); PRS to the current primary, or avoid_primary naming another tablet: done, no change
  5. fence any replica left writable by an interrupted reparent (its half-promoted elect)
  6. let the elect catch up with the primary while it still takes writes (shrinks the window;
     if it cannot, fail here with nothing changed)
  7. mark the primary not serving in the serving graph (clients stop sending it writes)
  --- window opens
  8. demote the old primary: read-only, read its position
  9. the elect waits for that position; if it cannot in time: undo (old primary writable and
     serving again) and fail
 10. promote the elect: replication reset, semi-sync per durability, writable; if that fails:
     fence the elect, old primary writable and serving again, elect repointed at it, and fail
  --- window closes
 11. in parallel: publish the new primary in topology (old primary -> replica), repoint every
     replica and the old primary, write the journal row on the new primary
 12. wait for the journal row on every repointed tablet
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from mysqlctl.client import ServerStatus
from mysqlctl.errors import MysqlError
from topo.records import Tablet, TabletType
from workflows.candidates import choose_prs_elect
from workflows.common import (
    ShardView,
    active_maintenance,
    candidate,
    check_tablets_in_shard,
    describe_errors,
    gather_map,
    probe,
    publish_new_primary,
    read_shard,
    refuse_if_active_reparents_disabled,
    replication_stopped,
    repoint_all,
    set_primary_serving,
    wait_journal,
    write_journal,
)
from workflows.env import ProgressFn, WorkflowEnv
from workflows.errors import (
    AbortedError,
    InvalidArgumentError,
    PartialFailureError,
    PreconditionError,
)
from workflows.result import ReparentResult
from workflows.run import WorkflowRun

ACTION = "PlannedReparentShard"
_NOT_RECORDED = ("keyspace", "shard", "lock_timeout", "deadline")


@dataclass(frozen=True)
class PlannedReparentOptions:
    keyspace: str
    shard: str
    new_primary: str | None = None
    avoid_primary: str | None = None
    expected_primary: str | None = None
    wait_replicas_timeout: float = 30.0
    allow_cross_cell_promotion: bool = False
    # How long to wait for the shard lock (None: the setting), and the caller's deadline
    # (epoch seconds): past it the workflow does not start. Neither is recorded for a rerun.
    lock_timeout: float | None = None
    deadline: float | None = None


async def planned_reparent_shard(
    env: WorkflowEnv, opts: PlannedReparentOptions, *, progress: ProgressFn | None = None
) -> ReparentResult:
    refuse_if_active_reparents_disabled(env, ACTION)
    if opts.new_primary and opts.avoid_primary:
        raise InvalidArgumentError("give new_primary or avoid_primary, not both")
    args = {k: v for k, v in vars(opts).items() if k not in _NOT_RECORDED}
    await check_tablets_in_shard(
        env.store, opts.keyspace, opts.shard,
        (opts.new_primary, opts.avoid_primary, opts.expected_primary),
    )  # fmt: skip
    async with WorkflowRun(
        env, ACTION, opts.keyspace, opts.shard, args, progress=progress,
        lock_timeout=opts.lock_timeout, deadline=opts.deadline,
    ) as run:  # fmt: skip
        view = await run.step("read_shard", read_shard(env.store, opts.keyspace, opts.shard))
        primary = view.primary
        if primary is None:
            raise PreconditionError(
                f"shard {view.shard.key} has no primary: use InitShardPrimary first"
            )
        if opts.expected_primary and opts.expected_primary != primary.alias:
            raise PreconditionError(
                f"primary is {primary.alias}, not the expected {opts.expected_primary}",
                tablet=primary.alias,
            )
        if opts.avoid_primary and opts.avoid_primary != primary.alias:
            view.tablet(opts.avoid_primary)  # unknown tablet: a clear error, not a silent no-op
            run.note("nothing_to_do", f"{opts.avoid_primary} is not the primary")
            return run.result(new_primary=primary.alias, old_primary=primary.alias, changed=False)
        if opts.new_primary == primary.alias:
            run.note("nothing_to_do", f"{primary.alias} already is the primary")
            return run.result(new_primary=primary.alias, old_primary=primary.alias, changed=False)

        statuses = await run.step("check_tablets_answer", probe(env, view.tablets))
        failed = {a: s for a, s in statuses.items() if isinstance(s, BaseException)}
        excused = sorted(
            a for a in failed
            if a not in (primary.alias, opts.new_primary)
            and active_maintenance(view.tablet(a)) is not None
        )  # fmt: skip
        if excused:
            run.note("left_out_under_maintenance", ", ".join(excused))
        failed = {a: e for a, e in failed.items() if a not in excused}
        if failed:
            raise PreconditionError(
                f"every tablet must answer before a planned reparent: {describe_errors(failed)}"
                f"; {_ways_out(sorted(failed), primary.alias, opts.new_primary)}",
                tablet=min(failed),
            )
        replicas = [t for t in view.tablets if t.alias != primary.alias]
        elect_alias = choose_prs_elect(
            primary.cell,
            [candidate(t, statuses[t.alias]) for t in replicas],
            new_primary=opts.new_primary,
            avoid_primary=opts.avoid_primary,
            allow_cross_cell=opts.allow_cross_cell_promotion,
        )
        elect = view.tablet(elect_alias)
        run.note("elect", f"{elect.alias} will replace {primary.alias}")
        # Recorded at once: if this process dies, a resumed run finishes this very move.
        run.set_result({"new_primary": elect.alias, "old_primary": primary.alias})
        primary_status = statuses[primary.alias]
        assert isinstance(primary_status, ServerStatus)
        stray = [t for t in replicas if _writable(statuses[t.alias])]
        if stray:
            run.lock.check()
            await run.step(
                "fence_writable_replicas", _fence(env, stray),
                detail=", ".join(t.alias for t in stray),
            )  # fmt: skip

        await run.step(
            "elect_catches_up_before_demotion",
            _catch_up(env, elect.alias, view, primary_status, opts.wait_replicas_timeout),
        )
        await env.faults.hit("prs.before_demote")
        run.lock.check()
        await run.step("mark_primary_not_serving", set_primary_serving(env, view, False, run.fence))

        # --- write-unavailability window opens
        window_start = time.monotonic()
        run.lock.check()
        position = await run.step("demote_primary", env.mysql(primary).demote())
        await env.faults.hit("prs.after_demote")
        try:
            await run.step(
                "elect_reaches_primary_position",
                env.mysql(elect).wait_for_position(position, opts.wait_replicas_timeout),
            )
        except (MysqlError, TimeoutError) as e:
            await run.step("undo_demotion", _undo_demotion(env, view, run))
            raise AbortedError(
                f"{elect.alias} did not reach the primary's position {position} within "
                f"{opts.wait_replicas_timeout}s ({e}); {primary.alias} is writable and serving "
                "again, nothing else changed",
                tablet=elect.alias,
            ) from e
        run.lock.check()
        try:
            new_position = await run.step(
                "promote_elect", env.mysql(elect).promote(semi_sync=view.semi_sync)
            )
        except (MysqlError, TimeoutError) as e:
            await run.step("undo_failed_promotion", _undo_promotion(env, view, elect.alias, run))
            rejoined = await run.step(
                "repoint_failed_elect", _rejoin(env, view, elect), detail=elect.alias
            )
            raise AbortedError(
                f"promoting {elect.alias} failed ({e}); it was fenced read-only and "
                f"{primary.alias} is writable and serving again; {rejoined}",
                tablet=elect.alias,
            ) from e
        window_ms = round((time.monotonic() - window_start) * 1000, 2)
        # --- window closed (MySQL side); clients learn of the new primary from the graph next
        await env.faults.hit("prs.after_promote")

        new_types = {primary.alias: TabletType.REPLICA}
        leave_stopped = [t.alias for t in replicas if replication_stopped(statuses[t.alias])]
        _, repoint_failures, entry = await asyncio.gather(
            run.step(
                "publish_topology",
                publish_new_primary(env, view, elect, run.fence, new_types=new_types),
            ),
            run.step(
                "repoint_replicas_and_old_primary",
                repoint_all(
                    env, view,
                    [t for t in view.tablets if t.alias not in (elect.alias, *excused)], elect,
                    own_binlog=[primary.alias], leave_stopped=leave_stopped,
                ),
            ),
            run.step("write_journal", write_journal(env, elect, ACTION, new_position)),
        )  # fmt: skip
        await env.faults.hit("prs.after_topology")
        waiting = [
            t for t in view.tablets
            if t.alias not in (elect.alias, *repoint_failures, *leave_stopped, *excused)
        ]  # fmt: skip
        late = await run.step(
            "wait_journal_on_replicas",
            wait_journal(env, waiting, entry, opts.wait_replicas_timeout),
        )
        problems = {**repoint_failures, **late}
        result = run.result(
            new_primary=elect.alias,
            old_primary=primary.alias,
            changed=True,
            position=new_position.encode(),
            journal_time_ns=entry.time_created_ns,
            write_unavailable_ms=window_ms,
            warnings=tuple(f"{a}: {e}" for a, e in sorted(problems.items())),
        )
        run.log.info("planned reparent done", window_ms=window_ms, new_primary=elect.alias)
        if problems:
            raise PartialFailureError(
                f"{elect.alias} is the new primary, but some tablets are not replicating from "
                f"it yet: {describe_errors(problems)}"
            )
        return result


def _ways_out(failed: list[str], primary: str, new_primary: str | None) -> str:
    """What the operator can do about tablets that do not answer."""
    ways = []
    if primary in failed:
        ways.append(f"the primary {primary} does not answer: use EmergencyReparentShard")
    if new_primary in failed:
        ways.append(f"name another primary-elect ({new_primary} does not answer)")
    others = [a for a in failed if a not in (primary, new_primary)]
    if others:
        ways.append(
            f"name another primary-elect or put {', '.join(others)} under maintenance "
            f"(BeginMaintenance {others[0]} --duration 30m --reason ...) to reparent without "
            f"{'it' if len(others) == 1 else 'them'}"
        )
    return "; ".join(ways)


def _writable(status: ServerStatus | BaseException) -> bool:
    return isinstance(status, ServerStatus) and not status.read_only


async def _fence(env: WorkflowEnv, tablets: list[Tablet]) -> None:
    """Make read-only the replicas that an interrupted reparent left writable (its promoted
    elect), before anything else: the old primary must never be writable again, nor another
    tablet promoted, next to them. The elect, if one of them, is promoted again later."""
    errors = await gather_map({t.alias: env.mysql(t).set_read_only(True) for t in tablets})
    failed = {a: e for a, e in errors.items() if isinstance(e, BaseException)}
    if failed:
        raise PreconditionError(
            f"writable replicas cannot be fenced read-only: {describe_errors(failed)}",
            tablet=min(failed),
        )


async def _catch_up(
    env: WorkflowEnv, elect: str, view: ShardView, primary: ServerStatus, timeout: float
) -> None:
    """Wait, before demotion, for the elect to reach the primary's current position."""
    try:
        await env.mysql(view.tablet(elect)).wait_for_position(primary.position, timeout)
    except (MysqlError, TimeoutError) as e:
        raise PreconditionError(
            f"{elect} cannot catch up with the primary ({e}); nothing was changed",
            tablet=elect,
        ) from e


async def _undo_demotion(env: WorkflowEnv, view: ShardView, run: WorkflowRun) -> None:
    """The old primary takes writes again and is marked serving: the shard is as before."""
    assert view.primary is not None
    await env.mysql(view.primary).set_read_only(False)
    await set_primary_serving(env, view, True, run.fence)


async def _rejoin(env: WorkflowEnv, view: ShardView, elect: Tablet) -> str:
    """The fenced elect replicates from the old primary again (its promotion had reset its
    replication): the shard is left as before, not with an orphaned replica. Best effort: a
    failure is reported, the health checks repair it later."""
    assert view.primary is not None
    failed = await repoint_all(env, view, [elect], view.primary)
    if failed:
        return (
            f"{elect.alias} could not be repointed at {view.primary.alias}: "
            f"{describe_errors(failed)}"
        )
    return f"{elect.alias} replicates from {view.primary.alias} again"


async def _undo_promotion(env: WorkflowEnv, view: ShardView, elect: str, run: WorkflowRun) -> None:
    """A promotion that failed half-way: fence the elect read-only before the old primary is
    made writable again, so two writable primaries never coexist. If the elect cannot be
    fenced, the old primary stays read-only and the error says so."""
    try:
        await env.mysql(view.tablet(elect)).set_read_only(True)
    except (MysqlError, TimeoutError) as e:
        raise PartialFailureError(
            f"promotion of {elect} failed and it cannot be fenced read-only ({e}); the old "
            "primary was left read-only: no tablet takes writes. Rerun PlannedReparentShard "
            "or EmergencyReparentShard",
            tablet=elect,
        ) from e
    await _undo_demotion(env, view, run)
