"""A separate process that takes a shard lock and holds it until killed (for SIGKILL tests).

Usage: python -m tests.helpers.lock_holder ENDPOINT ROOT KEYSPACE SHARD TTL
Prints `locked` on stdout once the lock is held.
"""

from __future__ import annotations

import asyncio
import sys

from orchestrator.logs import configure_logging
from topo.lock import ShardLock
from topo.store import TopoStore


async def main(endpoint: str, root: str, ks: str, shard: str, ttl: int) -> None:
    store = TopoStore([endpoint], root=root, instance_id="lock-holder-process")
    async with ShardLock(store, ks, shard, action="HoldForever", ttl=ttl):
        print("locked", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    endpoint, root, ks, shard, ttl = sys.argv[1:6]
    configure_logging(json=True, level="warning")
    asyncio.run(main(endpoint, root, ks, shard, int(ttl)))
