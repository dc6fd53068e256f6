"""Finishing a reparent that was interrupted (its process died mid-way): run the same workflow
again with the arguments it recorded.

Every step of every reparent workflow is idempotent, so a rerun converges from wherever the dead
one stopped (the crash-point tests show it for each named fault point). PRS records the elect it
chose as soon as it chooses, so a rerun of "PRS without a target" finishes the move it started
instead of choosing again.
"""

from __future__ import annotations

from typing import Any

from topo.records import WorkflowRecord
from workflows.emergency_reparent import EmergencyReparentOptions, emergency_reparent_shard
from workflows.env import ProgressFn, WorkflowEnv
from workflows.errors import InvalidArgumentError
from workflows.externally_reparented import (
    ExternallyReparentedOptions,
    tablet_externally_reparented,
)
from workflows.init_shard_primary import InitShardPrimaryOptions, init_shard_primary
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard
from workflows.result import ReparentResult

RESUMABLE = frozenset(
    {"PlannedReparentShard", "EmergencyReparentShard", "InitShardPrimary",
     "TabletExternallyReparented"}
)  # fmt: skip


def _known(args: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: args[k] for k in names if args.get(k) is not None}


async def rerun(
    env: WorkflowEnv, record: WorkflowRecord, *, progress: ProgressFn | None = None
) -> ReparentResult:
    """Run `record`'s workflow again, on the same shard, with the same arguments."""
    ks, shard, args = record.keyspace, record.shard, record.args
    if record.action == "PlannedReparentShard":
        elect = record.result.get("new_primary") or args.get("new_primary")
        opts = PlannedReparentOptions(
            ks, shard, new_primary=elect,
            avoid_primary=None if elect else args.get("avoid_primary"),
            **_known(args, "wait_replicas_timeout", "allow_cross_cell_promotion"),
        )  # fmt: skip
        return await planned_reparent_shard(env, opts, progress=progress)
    if record.action == "EmergencyReparentShard":
        ers = EmergencyReparentOptions(
            ks, shard, ignore_replicas=tuple(args.get("ignore_replicas") or ()),
            **_known(args, "new_primary", "wait_replicas_timeout", "prevent_cross_cell_promotion"),
        )  # fmt: skip
        return await emergency_reparent_shard(env, ers, progress=progress)
    if record.action == "InitShardPrimary":
        isp = InitShardPrimaryOptions(ks, shard, args["primary"], force=True)
        return await init_shard_primary(env, isp, progress=progress)
    if record.action == "TabletExternallyReparented":
        return await tablet_externally_reparented(
            env, ExternallyReparentedOptions(args["tablet"]), progress=progress
        )
    raise InvalidArgumentError(f"workflow {record.id} ({record.action}) cannot be resumed")
