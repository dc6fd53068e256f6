"""Shard locks: an etcd key bound to a lease, so a dead holder never blocks anyone for long.

Taking the lock is one transaction (`create_revision == 0` -> put with our lease). The key's
create_revision is the fencing token: every topology write made under the lock compares it, so a
holder that lost its lease (paused, partitioned, or force-unlocked) cannot write afterwards.

Waiting for a held lock watches the key for its deletion instead of polling; a timeout names the
holder and its action. While held, the lease is refreshed at a third of its TTL. If the lease
cannot be kept (etcd said it is gone, or no refresh succeeded before it would have expired), the
lock is marked lost and the task that holds it is cancelled, so the workflow stops before its next
side effect; leaving the `async with` block then raises `LockLostError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from types import TracebackType
from typing import Any

import structlog

from topo.errors import (
    LockLostError,
    LockTimeoutError,
    NodeExistsError,
    TopoError,
    TopoUnavailableError,
)
from topo.kv import Fence
from topo.records import LockInfo
from topo.store import TopoStore

log = structlog.get_logger(__name__)

LOST_REVOKE_TIMEOUT_S = 1.0


class ShardLock:
    """`async with ShardLock(store, ks, shard, action=...) as lock:` holds the shard lock.

    Inside the block, pass `lock.fence` to every topology write and call `lock.check()` before
    each MySQL side effect.
    """

    def __init__(
        self,
        store: TopoStore,
        keyspace: str,
        shard: str,
        *,
        action: str,
        workflow_id: str = "",
        reason: str = "",
        timeout: float = 30.0,
        ttl: int | None = None,
    ) -> None:
        self.store = store
        self.keyspace = keyspace
        self.shard = shard
        self.key = store.lock_key(keyspace, shard)
        self.action = action
        self.workflow_id = workflow_id
        self.reason = reason
        self.timeout = timeout
        self.ttl = ttl or store.lock_ttl
        self.info: LockInfo | None = None
        self.waited_s = 0.0
        self._fence: Fence | None = None
        self._lost = False
        self._keepalive: asyncio.Task[None] | None = None
        self._holder_task: asyncio.Task[Any] | None = None

    @property
    def fence(self) -> Fence:
        if self._fence is None:
            raise LockLostError(f"shard lock {self.keyspace}/{self.shard} is not held")
        return self._fence

    @property
    def lost(self) -> bool:
        return self._lost

    def check(self) -> None:
        """Raise LockLostError if the lock was lost; call before every side effect."""
        if self._lost or self._fence is None:
            raise LockLostError(f"shard lock {self.keyspace}/{self.shard} was lost")

    async def __aenter__(self) -> ShardLock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lost = self._lost
        if lost and exc_type is asyncio.CancelledError:
            # The cancellation is ours (the keep-alive cancelled the holder): consume it before
            # releasing, so that the release's etcd calls run as plain calls (a channel closed
            # under them is retried, not taken for a cancellation of this task).
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                task.uncancel()
            await self.release()
            raise LockLostError(
                f"shard lock {self.keyspace}/{self.shard} was lost; {self.action} stopped"
            ) from exc
        await self.release()

    async def acquire(self) -> None:
        """Take the lock, waiting (by watching the key) up to `timeout` seconds."""
        start = time.monotonic()
        deadline = start + self.timeout
        kv = self.store.kv
        lease_id: int | None = None
        try:
            while True:
                # A lease of our own per attempt: one granted before a wait longer than its TTL
                # would have expired by the time the holder is gone (nobody refreshes it while
                # we wait), and etcd would refuse the create ("requested lease not found").
                if lease_id is None:
                    lease_id = await kv.grant_lease(self.ttl)
                info = self._lock_info(lease_id)
                try:
                    created = await kv.create(self.key, info.to_json(), lease=lease_id)
                    break
                except NodeExistsError:
                    pass
                with contextlib.suppress(TopoError):
                    await kv.revoke_lease(lease_id)
                lease_id = None
                holder = await kv.get(self.key)
                if holder is None:
                    continue  # released between our create and our read: try again at once
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeoutError(
                        f"shard lock {self.keyspace}/{self.shard}",
                        LockInfo.from_json(holder.value),
                        time.monotonic() - start,
                    )
                await self._wait_deleted(holder.mod_revision, remaining)
        except BaseException:
            if lease_id is not None:
                with contextlib.suppress(Exception):
                    await kv.revoke_lease(lease_id)
            raise
        self.waited_s = time.monotonic() - start
        self._fence = Fence(self.key, created.create_revision)
        self.info = LockInfo.from_dict(
            {**info.to_dict(), "create_revision": created.create_revision}
        )
        self._lost = False
        self._holder_task = asyncio.current_task()
        self._keepalive = asyncio.create_task(self._keep_alive(lease_id))
        log.debug("shard lock taken", lock=self.key, action=self.action, waited_s=self.waited_s)

    def _lock_info(self, lease_id: int) -> LockInfo:
        return LockInfo(
            keyspace=self.keyspace,
            shard=self.shard,
            action=self.action,
            holder_host=socket.gethostname(),
            holder_pid=os.getpid(),
            instance_id=self.store.instance_id,
            workflow_id=self.workflow_id,
            reason=self.reason,
            started_at=time.time(),
            lease_id=lease_id,
        )

    async def _wait_deleted(self, seen_revision: int, timeout: float) -> None:
        """Return when the key is deleted after `seen_revision`, or after `timeout`.

        A watch broken by an etcd member going away also returns (after a short pause): the
        caller re-reads the lock, through the next endpoint, and waits again if still held.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                try:
                    async for ev in self.store.kv.watch(self.key, start_revision=seen_revision + 1):
                        if ev.value is None:
                            return
                except TopoUnavailableError:
                    await asyncio.sleep(0.1)

    async def _keep_alive(self, lease_id: int) -> None:
        """Refresh the lease every ttl/3; on loss, mark lost and cancel the holder."""
        expires = time.monotonic() + self.ttl
        interval = max(self.ttl / 3.0, 0.2)
        while True:
            await asyncio.sleep(min(interval, max(expires - time.monotonic(), 0.0)))
            if time.monotonic() >= expires:
                break
            try:
                # Bounded by the lease itself: a refresh stuck on a silent network (the store's
                # own timeouts can be longer than the TTL) must not outlive the lease.
                async with asyncio.timeout(max(expires - time.monotonic(), 0.0)):
                    ttl_left = await self.store.kv.refresh_lease(lease_id)
            except (TopoError, TimeoutError):
                continue  # keep trying until the lease would have expired
            if ttl_left <= 0:
                break
            expires = time.monotonic() + ttl_left
        self._lost = True
        log.warning("shard lock lost", lock=self.key, action=self.action)
        if self._holder_task is not None and not self._holder_task.done():
            self._holder_task.cancel(msg="shard lock lost")

    async def release(self) -> None:
        """Give the lock up (revoking the lease deletes the key). Safe to call twice."""
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keepalive
            self._keepalive = None
        if self.info is not None and self._fence is not None:
            # A lost lease is gone or about to be: revoking it is only a courtesy, and must not
            # hold the holder's exit up on the very network that lost it.
            with contextlib.suppress(TopoError, TimeoutError):
                async with asyncio.timeout(LOST_REVOKE_TIMEOUT_S if self._lost else None):
                    await self.store.kv.revoke_lease(self.info.lease_id)
        self._fence = None
