"""The checks every fault test relies on fail when what they check is broken, on real servers.

- `Shard.check_invariants` ("exactly one writable server, the primary the Shard record names,
  topology agreeing with MySQL") fails on a running server it cannot read, on a spare or drained
  tablet left writable, and when the Shard record names another tablet than the writable one.
- `SplitBrainWatcher` fails when two tablets accept writes at once, and stays quiet through a
  planned reparent (the old primary fenced, the elect promoted milliseconds later).
"""

from __future__ import annotations

import dataclasses
import os
import signal

import pytest

from tests.fixtures_cluster import ShardFactory
from tests.helpers.split_brain import SplitBrainWatcher
from topo.records import TabletType
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard


async def test_invariant_check_fails_on_unknown_state_writable_spare_and_wrong_record(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    assert await shard.check_invariants(wait_s=0) == "zone1-101"

    # A running server that does not answer is unknown, not read-only.
    pid = shard.server("zone1-103").pid
    assert pid
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(AssertionError, match="unknown"):
            await shard.check_invariants(wait_s=0)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert await shard.check_invariants() == "zone1-101"

    # A spare tablet is checked too: writable next to the primary is two writable servers.
    await shard.store.update_tablet_fields(
        "zone1-103", lambda t: dataclasses.replace(t, type=TabletType.SPARE)
    )
    assert await shard.check_invariants(wait_s=0) == "zone1-101"
    await shard.admin("zone1-103").set_read_only(False)
    with pytest.raises(AssertionError, match="exactly one writable"):
        await shard.check_invariants(wait_s=0)
    await shard.admin("zone1-103").set_read_only(True)

    # One writable server, but not the one the Shard record names.
    await shard.store.update_shard_fields(
        "commerce", "0", lambda s: dataclasses.replace(s, primary_alias="zone1-102")
    )
    with pytest.raises(AssertionError, match="exactly one writable"):
        await shard.check_invariants(wait_s=0)


async def test_split_brain_watcher_sees_two_writable_tablets_and_not_a_planned_switch(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    async with SplitBrainWatcher(shard) as watch:
        result = await planned_reparent_shard(
            shard.env, PlannedReparentOptions("commerce", "0", new_primary="zone1-102")
        )
        assert result.new_primary == "zone1-102"
        await watch.wait_samples(3)  # samples after the switch too
    assert {s.alias for s in watch.samples if s.writable} == {"zone1-101", "zone1-102"}
    print(f"planned switch: {watch.summary()}")

    watch = await SplitBrainWatcher(shard).start()
    try:
        await watch.wait_samples(2)
        await shard.admin("zone1-103").set_read_only(False)
        await watch.wait_samples(4)  # several samples of both while both are writable
        await shard.admin("zone1-103").set_read_only(True)
    finally:
        await watch.stop()
    with pytest.raises(AssertionError, match="two tablets accepted writes at once"):
        watch.assert_no_split_brain()
    print(f"two writable: {watch.overlaps()[:1]}")
