"""Which instance checks (and recovers) which shard: rendezvous hashing over the live instances.

Every instance already registers `{root}/global/members/masters/<instance-id>` on a lease of
its own (TTL `election_ttl_s`, `Service._membership`; what list-member shows). This module
watches that prefix, so each instance knows the live set within a watch round trip, and
computes

    owner(shard) = argmax over live instances i of hash(i, "ks/shard")

(rendezvous, or highest-random-weight, hashing): every instance computes the same owner from the
same set without talking to the others, and an instance that joins or leaves moves only its own
share of the shards (about 1/N of them), never reshuffles the rest.

- An instance that dies: its key goes with its lease (TTL), the watch fires on the survivors,
  they recompute and their checker runs a cycle at once (`wake`): its shards are checked again
  within the lease TTL plus one cycle.
- An instance that joins: it owns nothing until its own key is registered (before that the
  others do not know it either); from then on it checks its share at once, and the instance
  that lost a shard keeps checking it for `handover_s` more (two check intervals, at least the
  lease TTL) without recovering it, so there is no gap in checking (checking twice is
  harmless).
- With no live instance registered at all (a lone instance starting, before its key is in
  etcd) an instance owns every shard, so a single instance never waits to check. The checker
  waits for the first read of the registry (bounded) before its first cycle, so a joining
  instance does not take every shard for a cycle.

Views can differ for a moment (one instance saw a change a few ms before another): two
instances may then both decide to recover one shard. The shard lock makes them take turns and
each recovery re-confirms its problem on fresh data under that lock (an EmergencyReparentShard
that finds a writable primary does nothing), and the failover time in etcd (anti-flapping)
blocks a second failover, so a shard is still recovered once.

With `health_share_shards` off, every instance owns every shard (and only the leader recovers,
the behaviour before sharing).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable

import structlog

from topo.errors import TopoError
from topo.kv import EtcdKV

log = structlog.get_logger(__name__)


def weight(instance_id: str, shard_key: str) -> int:
    """A stable pseudo-random weight of (instance, shard): the same on every instance and
    every Python process (unlike `hash`, which is salted per process)."""
    digest = hashlib.blake2b(f"{instance_id}\0{shard_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(shard_key: str, instances: Iterable[str]) -> str | None:
    """The instance that owns `shard_key` among `instances` (None when there is none)."""
    return max(instances, key=lambda i: (weight(i, shard_key), i), default=None)


class Ownership:
    """This instance's view of the live instances, and so of the shards it owns."""

    def __init__(
        self, kv: EtcdKV, root: str, instance_id: str, *, enabled: bool, handover_s: float
    ) -> None:
        self.kv = kv
        self.prefix = f"{root}/global/members/masters/"
        self.instance_id = instance_id
        self.enabled = enabled
        self.handover_s = handover_s
        self.live: frozenset[str] = frozenset()
        self.loaded = False  # the registry was read at least once
        self.first_read = asyncio.Event()
        # Set (then replaced) on every change of the live set: the checker runs a cycle.
        self.wake = asyncio.Event()
        self.changes = 0
        self.changed_at = 0.0  # time.time() of the last change
        # Live sets before recent changes, with the monotonic time their handover ends.
        self._handovers: list[tuple[frozenset[str], float]] = []

    # -- who owns what ---------------------------------------------------------------------

    def _members(self, live: frozenset[str]) -> frozenset[str]:
        # Nobody registered (a lone instance starting): this instance stands for the fleet.
        return live or frozenset({self.instance_id})

    def owner(self, shard_key: str) -> str | None:
        if not self.enabled:
            return self.instance_id
        return owner_of(shard_key, self._members(self.live))

    def owns(self, shard_key: str) -> bool:
        """This instance checks and recovers `shard_key`."""
        return self.owner(shard_key) == self.instance_id

    def checks(self, shard_key: str) -> bool:
        """This instance checks `shard_key`: it owns it, or lost it less than `handover_s` ago
        (then it checks without recovering, until the new owner surely has)."""
        if self.owns(shard_key):
            return True
        now = time.monotonic()
        self._handovers = [(s, until) for s, until in self._handovers if until > now]
        return any(owner_of(shard_key, self._members(s)) == self.instance_id
                   for s, _ in self._handovers)  # fmt: skip

    # -- following the registry --------------------------------------------------------------

    def _set(self, live: frozenset[str]) -> None:
        if self.loaded and live == self.live:
            return
        if self.loaded:  # before the first read this instance owned nothing to hand over
            self._handovers.append((self.live, time.monotonic() + self.handover_s))
        self.loaded = True
        self.first_read.set()
        log.info("health: live instances changed; shards re-divided",
                 instances=sorted(live), joined=sorted(live - self.live),
                 left=sorted(self.live - live))  # fmt: skip
        self.live = live
        self.changes += 1
        self.changed_at = time.time()
        self.wake.set()
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Follow the registry until cancelled (a read, then a watch from that revision; on
        etcd trouble, read again a moment later)."""
        if not self.enabled:
            return
        while True:
            try:
                start = await self.kv.revision() + 1
                kvs = await self.kv.get_prefix(self.prefix, keys_only=True)
                live = {kv.key[len(self.prefix) :] for kv in kvs}
                self._set(frozenset(live))
                async for ev in self.kv.watch(self.prefix, prefix=True, start_revision=start):
                    name = ev.key[len(self.prefix) :]
                    if ev.value is None:
                        live.discard(name)
                    else:
                        live.add(name)
                    self._set(frozenset(live))
            except TopoError as e:
                log.warning("health: cannot follow the live instances; retrying", error=str(e))
                await asyncio.sleep(1.0)
