"""InitShardPrimary: make one tablet the primary of a new shard and every other tablet its
replica.

Steps:
  1. refuse if active reparents are disabled
  2. lock the shard, read it; refuse if it already has a primary (unless forced)
  3. every tablet must answer (a shard is initialised whole, or not at all)
  4. fence every other tablet read-only; the chosen tablet must already hold every
     transaction any other tablet holds (InitShardPrimary moves no data: re-initialising a
     live shard onto a tablet that is behind would lose writes, so it is refused and the
     fence undone; PlannedReparentShard is the way to move a live primary)
  5. promote the chosen tablet (writable, semi-sync per durability)
  6. point every other tablet at it (in parallel)
  7. write the journal row on the new primary and wait for it on every replica
  8. publish: tablet types, Shard record, serving graph
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mysqlctl.client import ServerStatus
from topo.records import Tablet, TabletType
from workflows.common import (
    check_tablets_in_shard,
    describe_errors,
    probe,
    publish_new_primary,
    read_shard,
    refuse_if_active_reparents_disabled,
    repoint_all,
    wait_journal,
    write_journal,
)
from workflows.env import ProgressFn, WorkflowEnv
from workflows.errors import PartialFailureError, PreconditionError
from workflows.result import ReparentResult
from workflows.run import WorkflowRun

ACTION = "InitShardPrimary"


@dataclass(frozen=True)
class InitShardPrimaryOptions:
    keyspace: str
    shard: str
    primary: str
    force: bool = False
    wait_replicas_timeout: float = 30.0
    # As PlannedReparentOptions: lock wait (None: the setting) and the caller's deadline.
    lock_timeout: float | None = None
    deadline: float | None = None


async def init_shard_primary(
    env: WorkflowEnv, opts: InitShardPrimaryOptions, *, progress: ProgressFn | None = None
) -> ReparentResult:
    refuse_if_active_reparents_disabled(env, ACTION)
    args = {"primary": opts.primary, "force": opts.force}
    await check_tablets_in_shard(env.store, opts.keyspace, opts.shard, (opts.primary,))
    async with WorkflowRun(
        env, ACTION, opts.keyspace, opts.shard, args, progress=progress,
        lock_timeout=opts.lock_timeout, deadline=opts.deadline,
    ) as run:  # fmt: skip
        view = await run.step("read_shard", read_shard(env.store, opts.keyspace, opts.shard))
        elect = view.tablet(opts.primary)
        current = view.shard.primary_alias
        if current is not None and not opts.force:
            raise PreconditionError(
                f"shard {view.shard.key} already has primary {current}; use force to "
                "re-initialise, or PlannedReparentShard to move it",
                tablet=current,
            )
        if elect.type not in (TabletType.REPLICA, TabletType.PRIMARY) and not opts.force:
            raise PreconditionError(
                f"{elect.alias} is a {elect.type.value} tablet; only a replica can become primary",
                tablet=elect.alias,
            )

        statuses = await run.step("check_tablets_answer", probe(env, view.tablets))
        failed = {a: s for a, s in statuses.items() if isinstance(s, BaseException)}
        if failed:
            raise PreconditionError(
                f"every tablet must answer to initialise the shard: {describe_errors(failed)}"
            )

        others = [t for t in view.tablets if t.alias != elect.alias]
        writable = [t for t in others if not _status(statuses, t.alias).read_only]
        run.lock.check()
        await run.step("fence_other_tablets", _set_read_only(env, writable, True))
        await run.step("check_elect_holds_everything", _check_elect(env, elect, others, writable))

        run.lock.check()
        position = await run.step(
            "promote", env.mysql(elect).promote(semi_sync=view.semi_sync), detail=elect.alias
        )
        await env.faults.hit("isp.after_promote")
        run.lock.check()
        repointed = await run.step("repoint_replicas", repoint_all(env, view, others, elect))
        entry = await run.step("write_journal", write_journal(env, elect, ACTION, position))
        await env.faults.hit("isp.after_journal")
        ok = [t for t in others if t.alias not in repointed]
        late = await run.step(
            "wait_journal_on_replicas", wait_journal(env, ok, entry, opts.wait_replicas_timeout)
        )
        new_types = {
            t.alias: (TabletType.REPLICA if t.type in (TabletType.PRIMARY, TabletType.SPARE)
                      else t.type)
            for t in others
        }  # fmt: skip
        await run.step(
            "publish_topology",
            publish_new_primary(env, view, elect, run.fence, new_types=new_types),
        )
        problems = {**repointed, **late}
        result = run.result(
            new_primary=elect.alias,
            old_primary=current,
            changed=True,
            position=position.encode(),
            journal_time_ns=entry.time_created_ns,
            warnings=tuple(f"{a}: {e}" for a, e in sorted(problems.items())),
        )
        if problems:
            raise PartialFailureError(
                f"{elect.alias} is primary but some replicas are not replicating from it: "
                + describe_errors(problems)
            )
        return result


def _status(statuses: Mapping[str, ServerStatus | BaseException], alias: str) -> ServerStatus:
    s = statuses[alias]
    assert isinstance(s, ServerStatus)
    return s


async def _set_read_only(env: WorkflowEnv, tablets: Sequence[Tablet], on: bool) -> None:
    await asyncio.gather(*(env.mysql(t).set_read_only(on) for t in tablets))


async def _check_elect(
    env: WorkflowEnv, elect: Tablet, others: Sequence[Tablet], fenced: Sequence[Tablet]
) -> None:
    """Refuse, undoing the fence, unless the elect holds every other tablet's transactions."""
    statuses = await probe(env, [elect, *others])
    elect_pos = _status(statuses, elect.alias).position
    ahead = {
        t.alias: _status(statuses, t.alias).position
        for t in others
        if not elect_pos.contains(_status(statuses, t.alias).position)
    }
    if ahead:
        await _set_read_only(env, fenced, False)
        detail = ", ".join(f"{a} has {p}" for a, p in sorted(ahead.items()))
        raise PreconditionError(
            f"{elect.alias} ({elect_pos}) lacks transactions other tablets hold ({detail}); "
            "InitShardPrimary moves no data and would lose them. Use PlannedReparentShard to "
            "move a live primary; nothing was changed",
            tablet=elect.alias,
        )
