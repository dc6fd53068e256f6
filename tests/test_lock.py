"""Shard locks against a real etcd: waiting, timeouts naming the holder, dead holders, fencing."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.tcp_proxy import TcpProxy
from topo.errors import LockLostError, LockTimeoutError, NotLockedError
from topo.kv import Fence
from topo.lock import ShardLock
from topo.records import Keyspace, Shard
from topo.store import TopoStore

REPO = Path(__file__).resolve().parent.parent


async def make_shard(topo: TopoStore) -> None:
    await topo.create_keyspace(Keyspace(name="commerce"))
    await topo.create_shard(Shard(keyspace="commerce", name="0"))


def set_primary(alias: str):  # type: ignore[no-untyped-def]
    return lambda s: dataclasses.replace(s, primary_alias=alias)


async def test_second_locker_gets_the_lock_as_soon_as_the_first_releases(topo: TopoStore) -> None:
    await make_shard(topo)
    first = ShardLock(topo, "commerce", "0", action="First")
    await first.acquire()
    got_at: list[float] = []

    async def second() -> None:
        async with ShardLock(topo, "commerce", "0", action="Second", timeout=10):
            got_at.append(time.monotonic())

    waiter = asyncio.create_task(second())
    # Nothing may happen for a while: 0.5 s is many etcd round trips, enough for a waiter that
    # ignored the held lock to have taken it.
    await asyncio.sleep(0.5)
    assert not got_at, "second locker must wait while the first holds the lock"
    released_at = time.monotonic()
    await first.release()
    await asyncio.wait_for(waiter, 10)
    handover = got_at[0] - released_at
    print(f"lock handover after release: {handover * 1000:.1f} ms")
    # Woken by the release (its watch of the key), not by its own 10 s deadline. How fast the
    # handover is, is a figure of `python -m bench.timeouts`.
    assert handover < 5.0


async def test_lock_timeout_names_the_holder_and_its_action(topo: TopoStore) -> None:
    await make_shard(topo)
    async with ShardLock(topo, "commerce", "0", action="PlannedReparentShard", workflow_id="wf-1"):
        start = time.monotonic()
        with pytest.raises(LockTimeoutError) as err:
            async with ShardLock(
                topo, "commerce", "0", action="EmergencyReparentShard", timeout=0.5
            ):
                pass
        assert 0.5 <= time.monotonic() - start < 2.0
    msg = str(err.value)
    assert "PlannedReparentShard" in msg and topo.instance_id in msg and "wf-1" in msg
    assert err.value.holder.action == "PlannedReparentShard"  # type: ignore[attr-defined]


async def test_list_locks_shows_holder_and_force_unlock_is_audited(topo: TopoStore) -> None:
    await make_shard(topo)
    async with ShardLock(topo, "commerce", "0", action="PlannedReparentShard") as lock:
        (info,) = await topo.list_locks()
        assert info.action == "PlannedReparentShard" and info.holder_pid == os.getpid()
        assert info.create_revision == lock.fence.create_revision
    assert await topo.list_locks() == []
    with pytest.raises(NotLockedError):
        await topo.force_unlock("commerce", "0", reason="test", by="tester")


@pytest.mark.slow
async def test_lock_of_a_sigkilled_holder_is_released_within_the_lease_ttl(topo: TopoStore) -> None:
    await make_shard(topo)
    ttl = 2
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.lock_holder", topo.kv.endpoint, topo.root,
         "commerce", "0", str(ttl)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(holder.stdout.readline), 15)
        assert line.strip() == "locked"
        (info,) = await topo.list_locks()
        assert info.holder_pid == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed_at = time.monotonic()
        async with ShardLock(topo, "commerce", "0", action="AfterKill", timeout=ttl + 5):
            waited = time.monotonic() - killed_at
        print(f"lock free {waited:.2f}s after SIGKILL of its holder (ttl {ttl}s)")
        assert waited <= ttl + 1.0
    finally:
        holder.kill()
        holder.wait()


async def test_fenced_write_after_force_unlock_is_refused_and_holder_is_stopped(
    topo: TopoStore,
) -> None:
    await make_shard(topo)
    operator = TopoStore([topo.kv.endpoint], root=topo.root, instance_id="operator")
    lock = ShardLock(topo, "commerce", "0", action="PlannedReparentShard", ttl=2)
    try:
        await lock.acquire()
        await topo.update_shard_fields("commerce", "0", set_primary("zone1-101"), fence=lock.fence)
        await operator.force_unlock("commerce", "0", reason="holder is stuck", by="oncall")
        with pytest.raises(LockLostError):
            await topo.update_shard_fields(
                "commerce", "0", set_primary("zone1-102"), fence=lock.fence
            )
        assert (await topo.get_shard("commerce", "0")).primary_alias == "zone1-101"
        # Someone else takes the lock: the old fence still must not work.
        async with ShardLock(operator, "commerce", "0", action="Other"):
            with pytest.raises(LockLostError):
                await topo.update_shard_fields(
                    "commerce", "0", set_primary("zone1-103"), fence=lock.fence
                )
        (entry,) = await topo.list_audit()
        assert entry["action"] == "UnlockShard" and entry["by"] == "oncall"
    finally:
        await lock.release()
        await operator.close()


@pytest.mark.slow
async def test_holder_whose_lease_is_revoked_is_cancelled_with_lock_lost(topo: TopoStore) -> None:
    await make_shard(topo)
    operator = TopoStore([topo.kv.endpoint], root=topo.root, instance_id="operator")
    steps: list[str] = []
    locked = asyncio.Event()

    async def workflow() -> None:
        async with ShardLock(topo, "commerce", "0", action="LongWorkflow", ttl=1):
            steps.append("locked")
            locked.set()
            await asyncio.sleep(30)
            steps.append("side effect after lease loss")

    task = asyncio.create_task(workflow())
    try:
        await asyncio.wait_for(locked.wait(), 5)
        info = await topo.get_lock("commerce", "0")
        assert info is not None
        await operator.kv.revoke_lease(info.lease_id)
        start = time.monotonic()
        with pytest.raises(LockLostError):
            await asyncio.wait_for(task, 5)
        print(f"holder stopped {time.monotonic() - start:.2f}s after its lease was revoked")
        assert steps == ["locked"]
    finally:
        task.cancel()
        await operator.close()


@pytest.mark.slow
async def test_lock_held_longer_than_its_ttl_stays_held(topo: TopoStore) -> None:
    """The keep-alive refreshes the lease: held for three TTLs, the lock is still the same key
    (same fencing token), nobody else can take it, and a fenced write still goes through."""
    await make_shard(topo)
    other = TopoStore([topo.kv.endpoint], root=topo.root, instance_id="other")
    ttl = 1
    try:
        async with ShardLock(topo, "commerce", "0", action="LongHold", ttl=ttl) as lock:
            token = lock.fence.create_revision
            # Three TTLs: without refreshes etcd would have expired the lease twice over.
            deadline = time.monotonic() + 3 * ttl
            while time.monotonic() < deadline:
                info = await topo.get_lock("commerce", "0")
                assert info is not None, "the lock key vanished while held"
                assert info.create_revision == token
                await asyncio.sleep(0.2)
            assert not lock.lost
            with pytest.raises(LockTimeoutError):
                async with ShardLock(other, "commerce", "0", action="Other", timeout=0.3):
                    pass
            await topo.update_shard_fields(
                "commerce", "0", set_primary("zone1-101"), fence=lock.fence
            )
        assert (await topo.get_shard("commerce", "0")).primary_alias == "zone1-101"
    finally:
        await other.close()


@pytest.mark.slow
async def test_lock_whose_refreshes_are_blocked_is_lost_before_its_lease_expires(
    topo: TopoStore,
) -> None:
    """A silent network cut between the holder and etcd (a proxy that stops forwarding, the
    store's own 5 s operation timeout in place): the holder marks the lock lost and is
    cancelled by the time its lease can have expired, never later, so it takes no side effect
    while someone else may hold the lock; once the lease is gone the lock is free for others
    and the old holder's fenced writes are refused."""
    await make_shard(topo)
    host, port = topo.kv.endpoint.rsplit(":", 1)
    proxy = await TcpProxy.start(host, int(port))
    holder_store = TopoStore([proxy.endpoint], root=topo.root, instance_id="cut-off-holder")
    ttl = 2
    steps: list[str] = []
    locked = asyncio.Event()
    lock = ShardLock(holder_store, "commerce", "0", action="LongWorkflow", ttl=ttl)

    async def workflow() -> None:
        async with lock:
            steps.append("locked")
            locked.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                stopped_at.append(time.monotonic())
                raise
            steps.append("side effect after the lease could have expired")

    stopped_at: list[float] = []
    task = asyncio.create_task(workflow())
    try:
        await asyncio.wait_for(locked.wait(), 5)
        frozen_at = time.monotonic()
        proxy.freeze()
        with pytest.raises(LockLostError):
            await asyncio.wait_for(asyncio.shield(task), ttl + 10)
        exited_after = time.monotonic() - frozen_at
        assert stopped_at, "the holder was not cancelled"
        stopped_after = stopped_at[0] - frozen_at
        print(f"holder cut from etcd: stopped {stopped_after:.2f}s after the cut, out of its "
              f"lock block after {exited_after:.2f}s (ttl {ttl}s)")  # fmt: skip
        # The last refresh was at most ttl/3 before the cut: etcd may expire the lease as soon
        # as `ttl` after the cut, so the holder must have stopped by then (0.5 s of slack for
        # a loaded machine's event loop).
        assert stopped_after <= ttl + 0.5, (
            f"the holder still believed it held the lock {stopped_after:.2f}s after the cut"
        )
        assert steps == ["locked"]
        async with ShardLock(topo, "commerce", "0", action="Next", timeout=ttl + 5) as nxt:
            assert nxt.fence.create_revision != lock.info.create_revision  # type: ignore[union-attr]
            proxy.thaw()
            with pytest.raises(LockLostError):
                await topo.update_shard_fields(
                    "commerce",
                    "0",
                    set_primary("zone1-109"),
                    fence=Fence(lock.key, lock.info.create_revision),  # type: ignore[union-attr]
                )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        proxy.thaw()
        await holder_store.close()
        await proxy.close()
