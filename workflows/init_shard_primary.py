"""InitShardPrimary: make one tablet the primary of a new shard and every other tablet its
replica.

Steps:
  1. refuse if active reparents are disabled
  2. lock the shard, read it; refuse if it already has a primary (unless forced)
  3. every tablet must answer (a shard is initialised whole, or not at all)
  4. promote the chosen tablet (writable, semi-sync per durability)
  5. point every other tablet at it (in parallel)
  6. write the journal row on the new primary and wait for it on every replica
  7. publish: tablet types, Shard record, serving graph
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from topo.records import TabletType
from workflows.common import (
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


async def init_shard_primary(
    env: WorkflowEnv, opts: InitShardPrimaryOptions, *, progress: ProgressFn | None = None
) -> ReparentResult:
    refuse_if_active_reparents_disabled(env, ACTION)
    started = time.monotonic()
    args = {"primary": opts.primary, "force": opts.force}
    async with WorkflowRun(env, ACTION, opts.keyspace, opts.shard, args, progress=progress) as run:
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

        run.lock.check()
        position = await run.step(
            "promote", env.mysql(elect).promote(semi_sync=view.semi_sync), detail=elect.alias
        )
        await env.faults.hit("isp.after_promote")
        others = [t for t in view.tablets if t.alias != elect.alias]
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
        result = ReparentResult(
            workflow_id=run.id,
            action=ACTION,
            keyspace=opts.keyspace,
            shard=opts.shard,
            new_primary=elect.alias,
            old_primary=current,
            changed=True,
            position=position.encode(),
            journal_time_ns=entry.time_created_ns,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            warnings=tuple(f"{a}: {e}" for a, e in sorted(problems.items())),
        )
        run.set_result(result.to_dict())
        if problems:
            raise PartialFailureError(
                f"{elect.alias} is primary but some replicas are not replicating from it: "
                + describe_errors(problems)
            )
        return result
