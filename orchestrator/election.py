"""Leader election among orchestrator instances: one etcd key bound to the leader's lease.

The leader runs automatic recoveries and delivers the outbox; every instance serves the API.
Campaigning is a create-if-absent transaction; a follower watches the key and campaigns again
the moment it is deleted (the leader stopped, or its lease expired because it died), so a
killed leader is replaced within the lease TTL. A leader that cannot refresh its lease steps
down before the lease could have expired on the server.

`resign(hold_off)` (SIGTERM, offline-member --type master) revokes the leader's lease at once,
so a follower leads within a moment instead of after the TTL, and keeps this instance from
campaigning for `hold_off` seconds (forever on shutdown) so that the follower wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time

import structlog

from topo.errors import NodeExistsError, TopoError
from topo.store import TopoStore

log = structlog.get_logger(__name__)


class LeaderElection:
    def __init__(self, store: TopoStore, *, ttl: int = 5) -> None:
        self.store = store
        self.ttl = ttl
        self.key = f"{store.root}/global/election"
        self._leader = False
        self.leader_id: str | None = None
        self.changed = asyncio.Event()
        self.terms = 0
        self._resign = asyncio.Event()
        self._hold_off_until = 0.0
        self.released = asyncio.Event()  # set once a resigned lease is revoked

    @property
    def is_leader(self) -> bool:
        return self._leader

    def _set(self, leader: bool, leader_id: str | None) -> None:
        if leader != self._leader:
            log.info("leadership changed", leader=leader, instance_id=self.store.instance_id)
            if leader:
                self.terms += 1
        self._leader = leader
        self.leader_id = leader_id
        self.changed.set()
        self.changed = asyncio.Event()

    def resign(self, hold_off: float = float("inf")) -> None:
        """Give up the leadership (if held) and do not campaign for `hold_off` seconds."""
        self._hold_off_until = time.monotonic() + hold_off
        self.released.clear()
        self._resign.set()
        if not self._leader:
            self.released.set()

    async def run(self) -> None:
        try:
            while True:
                wait = self._hold_off_until - time.monotonic()
                if wait > 0:
                    self._resign.clear()
                    await asyncio.sleep(min(wait, 3600.0))
                    continue
                self._resign.clear()
                try:
                    await self._campaign_once()
                except TopoError as e:
                    self._set(False, None)
                    log.warning("election: etcd trouble, retrying", error=str(e))
                    await asyncio.sleep(min(1.0, self.ttl / 3))
        finally:
            self._set(False, None)

    async def _campaign_once(self) -> None:
        kv = self.store.kv
        lease = await kv.grant_lease(self.ttl)
        body = json.dumps({"instance_id": self.store.instance_id, "host": socket.gethostname(),
                           "pid": os.getpid(), "since": time.time()}).encode()  # fmt: skip
        try:
            await kv.create(self.key, body, lease=lease)
        except NodeExistsError:
            with contextlib.suppress(TopoError):
                await kv.revoke_lease(lease)
            await self._follow()
            return
        except BaseException:
            with contextlib.suppress(Exception):
                await kv.revoke_lease(lease)
            raise
        try:
            self._set(True, self.store.instance_id)
            await self._hold(lease)
        finally:
            self._set(False, None)
            with contextlib.suppress(Exception):
                await asyncio.shield(kv.revoke_lease(lease))
            if self._resign.is_set():
                log.info("leader resigned", instance_id=self.store.instance_id)
                self.released.set()

    async def _hold(self, lease: int) -> None:
        """Refresh the lease every ttl/3 until it cannot be refreshed in time."""
        expires = time.monotonic() + self.ttl
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ttl / 3):
                    await self._resign.wait()
            if self._resign.is_set():
                return
            try:
                left = await self.store.kv.refresh_lease(lease)
            except TopoError:
                left = 0 if time.monotonic() >= expires - self.ttl / 3 else -1
                if left == -1:
                    continue
            if left <= 0:
                log.warning("leader lease lost; stepping down")
                return
            expires = time.monotonic() + left

    async def _follow(self) -> None:
        """Wait until the current leader's key disappears."""
        current = await self.store.kv.get(self.key)
        if current is None:
            return
        with contextlib.suppress(ValueError):
            self._set(False, json.loads(current.value).get("instance_id"))
        async for ev in self.store.kv.watch(self.key, start_revision=current.mod_revision + 1):
            if ev.value is None:
                return
