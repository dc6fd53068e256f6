"""StopReplication is for replicas, and its mark does not outlive a change of role."""

from __future__ import annotations

import pytest

from tests.fixtures_cluster import ShardFactory
from workflows.errors import PreconditionError
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard
from workflows.replication import STOPPED_BY_OPERATOR_TAG, start_replication, stop_replication


async def test_stop_replication_on_the_primary_is_refused(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=2)
    with pytest.raises(PreconditionError, match="zone1-101 is the primary of commerce/0") as e:
        await stop_replication(shard.env, "zone1-101")
    assert e.value.tablet == "zone1-101"
    assert STOPPED_BY_OPERATOR_TAG not in (await shard.tablet("zone1-101")).tags
    assert await shard.check_invariants() == "zone1-101"


async def test_a_reparent_clears_the_stop_replication_mark_of_tablets_whose_role_changed(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    await stop_replication(shard.env, "zone1-102")
    await stop_replication(shard.env, "zone1-103")
    await planned_reparent_shard(
        shard.env, PlannedReparentOptions("commerce", "0", new_primary="zone1-102")
    )
    assert STOPPED_BY_OPERATOR_TAG not in (await shard.tablet("zone1-102")).tags  # promoted
    await stop_replication(shard.env, "zone1-101")  # the old primary, a replica now
    await planned_reparent_shard(
        shard.env, PlannedReparentOptions("commerce", "0", new_primary="zone1-101")
    )
    assert STOPPED_BY_OPERATOR_TAG not in (await shard.tablet("zone1-101")).tags  # promoted
    assert STOPPED_BY_OPERATOR_TAG not in (await shard.tablet("zone1-102")).tags  # demoted
    # zone1-103 stayed a replica throughout: the operator's stop still holds for it.
    assert (await shard.tablet("zone1-103")).tags[STOPPED_BY_OPERATOR_TAG]
    await start_replication(shard.env, "zone1-103")
    assert await shard.check_invariants() == "zone1-101"
