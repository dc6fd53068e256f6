"""Reparents racing each other: one shard lock per shard serialises them on one shard and lets
different shards proceed in parallel. Real etcd and MariaDB servers."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.fixtures_cluster import Shard, ShardFactory, ShardsFactory, Writer
from topo.errors import LockTimeoutError
from topo.records import WorkflowStatus
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard


def prs(shard: Shard, new_primary: str) -> PlannedReparentOptions:
    return PlannedReparentOptions(
        shard.keyspace, shard.shard, new_primary=new_primary, wait_replicas_timeout=5
    )


async def test_two_prs_on_one_shard_run_one_after_the_other(shard_factory: ShardFactory) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    await writer.wait_acked(10)
    try:
        a, b = await asyncio.gather(
            planned_reparent_shard(shard.env, prs(shard, "zone1-102")),
            planned_reparent_shard(shard.env_with(), prs(shard, "zone1-103")),
        )
        await writer.wait_acked(10)
    finally:
        await writer.stop()
    writer.check_errors("read_only")  # refused by a demoted primary, for a moment
    assert a.changed and b.changed
    records = {r.id: r for r in await shard.store.list_workflows()}
    first, second = sorted([a, b], key=lambda r: records[r.workflow_id].updated_at)
    # The second one waited for the lock, then read the shard as the first left it.
    assert second.old_primary == first.new_primary
    assert first.old_primary == "zone1-101"
    assert await shard.primary_alias() == second.new_primary
    for alias in shard.aliases:
        await writer.wait_all_on(alias)
    assert await shard.check_invariants() == second.new_primary


async def test_prs_waiting_for_a_busy_shard_times_out_naming_the_holder(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=3)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold_the_lock() -> None:
        holding.set()
        await asyncio.wait_for(release.wait(), 10)

    slow_env = shard.with_faults(prs_before_demote=hold_the_lock)
    first = asyncio.create_task(planned_reparent_shard(slow_env, prs(shard, "zone1-102")))
    try:
        await asyncio.wait_for(holding.wait(), 10)
        impatient = shard.env_with(lock_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="PlannedReparentShard") as e:
            await planned_reparent_shard(impatient, prs(shard, "zone1-103"))
        # Gives up after its own 0.3 s lock timeout, not when the holder (up to 10 s) is done;
        # the overrun of a lock wait is a figure of `python -m bench.timeouts`.
        assert time.monotonic() - started < 5
        holder = e.value.holder
        running = [w for w in await shard.store.list_workflows() if w.status.value == "running"]
        assert [w.id for w in running] == [holder.workflow_id]  # type: ignore[attr-defined]
        assert holder.action == "PlannedReparentShard"  # type: ignore[attr-defined]
    finally:
        release.set()
        result = await first
    assert result.new_primary == "zone1-102"
    failed = [w for w in await shard.store.list_workflows() if w.status == WorkflowStatus.FAILED]
    assert len(failed) == 1 and "timed out" in failed[0].error
    assert await shard.check_invariants() == "zone1-102"


async def test_prs_on_two_shards_runs_in_parallel(shards_factory: ShardsFactory) -> None:
    left, right = await shards_factory(shards=2, tablets=3)
    assert (left.shard, right.shard) == ("-80", "80-")
    # Each PRS waits, lock held, until the other one is also inside its lock: if the two
    # were serialised, neither could get past this point.
    both_inside = asyncio.Barrier(2)

    async def meet_the_other() -> None:
        await asyncio.wait_for(both_inside.wait(), 10)

    env = left.with_faults(prs_before_demote=meet_the_other)
    started = time.monotonic()
    results = await asyncio.gather(
        planned_reparent_shard(env, prs(left, "zone1-102")),
        planned_reparent_shard(env, prs(right, "zone1-202")),
    )
    elapsed_ms = (time.monotonic() - started) * 1000
    print(
        f"\nPRS on two shards in parallel: {elapsed_ms:.0f} ms in all; each "
        f"{results[0].duration_ms} ms and {results[1].duration_ms} ms"
    )
    assert [r.new_primary for r in results] == ["zone1-102", "zone1-202"]
    assert await left.check_invariants() == "zone1-102"
    assert await right.check_invariants() == "zone1-202"
    # Both updated the keyspace's one serving graph; neither update was lost.
    graph = await left.store.get_srv_keyspace("zone1", left.keyspace)
    primaries = {s.name: s.primary.alias for s in graph.shards if s.primary is not None}
    assert primaries == {"-80": "zone1-102", "80-": "zone1-202"}
