"""The service finishes a reparent whose process died mid-way: a PlannedReparentShard run in a
child process SIGKILLs itself at a named fault point; the service, started afterwards, resumes
the workflow from its record and the shard converges with no acknowledged write lost."""

from __future__ import annotations

import pytest

from tests.fixtures_cluster import ShardFactory, Writer
from tests.fixtures_service import ServiceFactory
from tests.helpers.health import wait_for
from tests.helpers.split_brain import SplitBrainWatcher
from tests.workflows.test_crash_points import run_child
from topo.records import WorkflowStatus

pytestmark = pytest.mark.slow

# Acknowledged application writes required before the crash and again after convergence.
MIN_WRITES = 20


@pytest.mark.parametrize("point", ["prs.after_demote", "prs.after_promote"])
async def test_service_resumes_a_prs_killed_at(
    point: str, shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3, durability="semi_sync")
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    try:
        await writer.wait_acked(MIN_WRITES)
        async with SplitBrainWatcher(shard) as watch:
            child = await run_child(
                shard, "PlannedReparentShard",
                {"keyspace": "commerce", "shard": "0", "new_primary": "zone1-102"}, point,
            )  # fmt: skip
            assert child.returncode == -9, child.stderr[-2000:]
            rs = await service_factory(
                shard, health_interval_s=0.3, health_timeout_s=0.25, lock_ttl_s=3
            )
            await wait_for(lambda: rs.service.election.is_leader, 10, "leadership")

            async def moved() -> bool:
                return (await shard.primary_alias()) == "zone1-102" and any(
                    e["action"] == "ResumeReparent|RestorePrimaryServing"
                    or "resumed" in e["reason"]
                    for e in rs.service.health.recoveries()
                    if e["result"] == "succeeded"
                )

            await wait_for(moved, 30, "the service to resume the interrupted PRS")
            assert await shard.check_invariants() == "zone1-102"
            await writer.wait_acked(MIN_WRITES)  # the application writes on the new primary
    finally:
        await writer.stop()
    # Refused by the demoted primary while the graph still names it; with semi-sync, a commit
    # left waiting for an ACK when the replicas were repointed may time out.
    writer.check_errors("read_only", "timeout")
    assert await shard.check_invariants() == "zone1-102"
    assert await writer.missing_on("zone1-102") == []
    records = {r.id: r for r in await shard.store.list_workflows()}
    killed = [r for r in records.values() if r.status == WorkflowStatus.INTERRUPTED]
    assert len(killed) == 1 and killed[0].action == "PlannedReparentShard"
    print(f"{point}: resumed by the service; {len(writer.acked)} writes acknowledged, none "
          f"lost; failures {dict(writer.error_kinds)}; {watch.summary()}")  # fmt: skip
