"""TabletExternallyReparented: an outside tool already promoted a server; make the topology say
so. MySQL replication is not changed.

Steps:
  1. find the tablet; lock its shard; read the Shard record and every tablet (a cell that
     cannot be read is skipped)
  2. verify the new primary is not replicating and is writable (the outside tool finished)
  3. write the journal row on the new primary
  4. the old primary becomes `spare` if it does not answer, else `replica` (and is fenced
     read-only if the outside tool left it writable)
  5. publish: new primary's type and term, Shard record, serving graph

Fails cleanly, with nothing changed, if etcd is unavailable. Not gated by
`disable_active_reparents`: this is how an external failover tool reports to us.
"""

from __future__ import annotations

from dataclasses import dataclass

from mysqlctl.client import ServerStatus
from mysqlctl.errors import MysqlError
from topo.alias import TabletAlias
from topo.records import Tablet, TabletType
from workflows.common import probe, publish_new_primary, read_shard, write_journal
from workflows.env import ProgressFn, WorkflowEnv
from workflows.errors import PreconditionError
from workflows.result import ReparentResult
from workflows.run import WorkflowRun

ACTION = "TabletExternallyReparented"


@dataclass(frozen=True)
class ExternallyReparentedOptions:
    tablet: str

    def __post_init__(self) -> None:
        TabletAlias.parse(self.tablet)


async def tablet_externally_reparented(
    env: WorkflowEnv, opts: ExternallyReparentedOptions, *, progress: ProgressFn | None = None
) -> ReparentResult:
    new = await env.store.get_tablet(opts.tablet)
    args = {"tablet": opts.tablet}
    async with WorkflowRun(env, ACTION, new.keyspace, new.shard, args, progress=progress) as run:
        view = await run.step("read_shard", read_shard(env.store, new.keyspace, new.shard))
        if view.unreadable_cells:
            run.note("skipped_cells", ", ".join(view.unreadable_cells))
        new = view.tablet(opts.tablet)
        old = view.primary
        if old is not None and old.alias == new.alias and new.type == TabletType.PRIMARY:
            run.note("nothing_to_do", f"{new.alias} already is the primary")
            return run.result(new_primary=new.alias, old_primary=new.alias, changed=False)

        status = await run.step("verify_new_primary", _verify(env, new))
        await env.faults.hit("ter.after_verify")
        entry = await run.step("write_journal", write_journal(env, new, ACTION, status.position))

        new_types = {}
        if old is not None and old.alias != new.alias:
            answers = await run.step("probe_old_primary", probe(env, [old]))
            old_status = answers[old.alias]
            alive = isinstance(old_status, ServerStatus)
            if isinstance(old_status, ServerStatus) and not old_status.read_only:
                # The outside tool moved the primary but left the old one writable: fence it,
                # or two servers would take writes. Replication itself is left alone.
                run.lock.check()
                await run.step("fence_old_primary", env.mysql(old).set_read_only(True))
            new_types[old.alias] = TabletType.REPLICA if alive else TabletType.SPARE
            run.note("old_primary", f"{old.alias} -> {new_types[old.alias].value}")
        await env.faults.hit("ter.after_tablets")
        run.lock.check()
        await run.step(
            "publish_topology",
            publish_new_primary(env, view, new, run.fence, new_types=new_types),
        )
        return run.result(
            new_primary=new.alias,
            old_primary=old.alias if old else None,
            changed=True,
            position=status.position.encode(),
            journal_time_ns=entry.time_created_ns,
        )


async def _verify(env: WorkflowEnv, tablet: Tablet) -> ServerStatus:
    """The outside tool must have finished: not a replica of anyone, and writable."""
    try:
        status = await env.mysql(tablet).status(timeout=env.settings.probe_timeout)
    except (MysqlError, TimeoutError) as e:
        raise PreconditionError(f"{tablet.alias} does not answer: {e}", tablet=tablet.alias) from e
    repl = status.replication
    if repl is not None and (repl.io_running or repl.sql_running):
        raise PreconditionError(
            f"{tablet.alias} still replicates from {repl.source_host}:{repl.source_port}; "
            "it is not a primary yet",
            tablet=tablet.alias,
        )
    if status.read_only:
        raise PreconditionError(
            f"{tablet.alias} is read-only; the external tool has not made it writable",
            tablet=tablet.alias,
        )
    return status
