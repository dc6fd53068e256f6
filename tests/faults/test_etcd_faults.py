"""etcd failures during a planned reparent, on a real 3-member etcd cluster on loopback.

- One member killed mid-PRS: the store moves to another member and the PRS completes.
- Every member unreachable (SIGSTOP) mid-PRS: the PRS fails; MySQL is left with exactly one
  writable server; once etcd is back, a rerun of the same command converges.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orchestrator.local import cluster
from orchestrator.local.cluster import ClusterSpec
from orchestrator.local.etcd import EtcdServer, start_etcd
from tests.fixtures_cluster import Shard, Writer
from topo.errors import LockLostError, TopoError
from workflows.env import WorkflowEnv
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard

pytestmark = pytest.mark.slow


@pytest.fixture
async def etcd_cluster(tmp_path: Path) -> AsyncIterator[list[EtcdServer]]:
    members = await start_etcd(tmp_path / "etcd", members=3)
    yield members
    for m in members:
        if m.pid:
            with_cont(m)
            m.kill()


def with_cont(m: EtcdServer) -> None:
    if m.pid:
        os.kill(m.pid, signal.SIGCONT)


@pytest.fixture
async def ha_shard(etcd_cluster: list[EtcdServer], tmp_path: Path) -> AsyncIterator[Shard]:
    spec = ClusterSpec(tablets_per_shard=3, service=False, root="/faults")
    endpoints = [m.endpoint for m in etcd_cluster]
    state = await cluster.up(tmp_path / "c", spec, etcd_endpoints=endpoints)
    store = state.store(lock_ttl=3, op_timeout=1.5)
    shard = Shard(state, store, WorkflowEnv(store, state.credentials()), "commerce", "0")
    yield shard
    await shard.close()
    for t in state.tablets:
        t.server.kill()


def member_at(members: list[EtcdServer], endpoint: str) -> EtcdServer:
    return next(m for m in members if m.endpoint == endpoint)


async def test_prs_completes_when_the_etcd_member_in_use_dies(
    ha_shard: Shard, etcd_cluster: list[EtcdServer]
) -> None:
    await ha_shard.create_test_table()
    writer = Writer(ha_shard)
    writer.start()
    await asyncio.sleep(0.3)
    killed: list[str] = []

    async def kill_current_member() -> None:
        victim = member_at(etcd_cluster, ha_shard.store.kv.endpoint)
        victim.kill()
        killed.append(victim.name)

    env = ha_shard.with_faults(prs_after_demote=kill_current_member)
    start = time.monotonic()
    result = await planned_reparent_shard(
        env, PlannedReparentOptions("commerce", "0", new_primary="zone1-102")
    )
    print(
        f"PRS with etcd member {killed[0]} killed mid-way: {(time.monotonic() - start) * 1000:.0f} ms"
    )
    assert result.new_primary == "zone1-102" and killed
    await asyncio.sleep(0.3)
    await writer.stop()
    assert await ha_shard.check_invariants() == "zone1-102"
    assert await writer.missing_on("zone1-102") == []


async def test_prs_with_etcd_unreachable_fails_cleanly_and_rerun_converges(
    ha_shard: Shard, etcd_cluster: list[EtcdServer]
) -> None:
    await ha_shard.create_test_table()
    writer = Writer(ha_shard)
    writer.start()
    await asyncio.sleep(0.3)

    async def freeze_etcd() -> None:
        for m in etcd_cluster:
            os.kill(m.pid, signal.SIGSTOP)

    env = ha_shard.with_faults(prs_after_demote=freeze_etcd)
    try:
        with pytest.raises((TopoError, LockLostError)):
            await planned_reparent_shard(
                env, PlannedReparentOptions("commerce", "0", new_primary="zone1-102")
            )
        # MySQL on its own: never two writable servers while etcd is away.
        statuses = await ha_shard.statuses()
        writable = [a for a, s in statuses.items() if not getattr(s, "read_only", True)]
        print(f"while etcd was frozen, writable servers: {writable}")
        assert len(writable) <= 1
    finally:
        for m in etcd_cluster:
            with_cont(m)
    # etcd is back: rerunning the same command converges (after the dead lock's lease expires).
    rerun = await planned_reparent_shard(
        ha_shard.env, PlannedReparentOptions("commerce", "0", new_primary="zone1-102")
    )
    assert rerun.new_primary == "zone1-102"
    await asyncio.sleep(0.5)
    await writer.stop()
    assert await ha_shard.check_invariants() == "zone1-102"
    assert await writer.missing_on("zone1-102") == []
