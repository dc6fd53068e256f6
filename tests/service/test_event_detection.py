"""Event-driven failure detection (`orchestrator.health.primary_watch`), end to end: real
MariaDB servers, a real etcd, the service in-process.

A SIGKILLed primary closes its sockets; with a health interval of 5 s the failover must start
long before the next cycle would have run, and with event detection switched off it must not
(so the first test measures the watch, not a lucky cycle). The watch follows the topology: a
planned reparent moves it to the new primary. The cut of the orchestrator alone from a primary
is in tests/faults/test_partitions.py (network namespace) and tests/service/test_recovery.py
(account locked and its connections killed: the watch fires, nothing is done).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import pytest

from orchestrator.health.analysis import ProblemKind
from tests.fixtures_cluster import Shard, ShardFactory
from tests.fixtures_service import RunningService, ServiceFactory
from tests.helpers.health import recoveries, start_service, wait_for
from workflows.planned_reparent import PlannedReparentOptions, planned_reparent_shard

pytestmark = pytest.mark.slow

SLOW_CYCLE = {"health_interval_s": 5.0, "health_timeout_s": 0.8}


async def sleeping_watches(shard: Shard, alias: str) -> int:
    """The watch queries running on `alias` (the server's own view)."""
    rows = await shard.admin(alias).fetch_all("SHOW FULL PROCESSLIST")
    return sum(1 for r in rows if str(r.get("Info") or "").startswith("SELECT SLEEP("))


async def ers_started_since(shard: Shard, wall: float) -> list[float]:
    return [
        w.created_at
        for w in await shard.store.list_workflows()
        if w.action == "EmergencyReparentShard" and w.created_at >= wall
    ]


async def kill_right_after_a_cycle(rs: RunningService, shard: Shard, alias: str) -> float:
    """SIGKILL `alias` just after a cycle ended: the next one is a whole interval away."""
    health = rs.service.health
    before = health.cycles
    await wait_for(lambda: health.cycles > before, 12, "a health cycle to end")
    wall = time.time()
    shard.server(alias).kill()
    return wall


async def test_primary_crash_starts_the_failover_long_before_the_next_cycle(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3, durability="semi_sync")
    rs = await start_service(shard, service_factory, recovery_block_s=30, **SLOW_CYCLE)
    health = rs.service.health
    await wait_for(lambda: health.primary_watch.watched() == {"commerce/0": "zone1-101"}, 12,
                   "the primary watched")  # fmt: skip
    await wait_for(lambda: sleeping_watches(shard, "zone1-101"), 5, "the watch's query")

    killed = await kill_right_after_a_cycle(rs, shard, "zone1-101")
    cycles_at_kill = health.cycles
    started = await wait_for(lambda: ers_started_since(shard, killed), 1.5,
                             "an ERS within 1.5 s of the kill (the next cycle is 5 s away)")  # fmt: skip
    detect_s = min(started) - killed
    cycles_by_then = health.cycles
    await wait_for(lambda: recoveries(rs, ProblemKind.DEAD_PRIMARY, "succeeded"), 5,
                   "the failover to succeed")  # fmt: skip
    repaired_s = time.time() - killed

    print(f"\nSIGKILL of the primary, health interval 5 s: ERS started after "
          f"{detect_s * 1000:.0f} ms, recovery done after {repaired_s * 1000:.0f} ms; watch "
          f"events: {list(health.primary_watch.events)}")  # fmt: skip
    assert cycles_by_then == cycles_at_kill, "a cycle ran: not the watch's doing"
    assert detect_s < 1.5
    new_primary = await shard.check_invariants()
    assert new_primary in ("zone1-102", "zone1-103")
    decided = [e for e in health.primary_watch.events if e.get("outcome") == "decided"]
    assert len(decided) == 1 and decided[0]["primary"] == "zone1-101"
    assert ProblemKind.DEAD_PRIMARY.value in decided[0]["problems"]
    assert len(recoveries(rs, ProblemKind.DEAD_PRIMARY)) == 1


async def test_without_event_detection_the_crash_waits_for_the_next_cycle(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(
        shard, service_factory, recovery_block_s=30, health_event_detection=False, **SLOW_CYCLE
    )
    health = rs.service.health
    cycles = health.cycles
    await wait_for(lambda: health.cycles >= cycles + 1, 12, "a cycle as leader")
    assert health.primary_watch.watched() == {}
    assert await sleeping_watches(shard, "zone1-101") == 0

    killed = await kill_right_after_a_cycle(rs, shard, "zone1-101")
    await asyncio.sleep(2.0)
    assert await ers_started_since(shard, killed) == [], "an ERS before the next cycle"
    started = await wait_for(lambda: ers_started_since(shard, killed), 8, "the next cycle's ERS")
    detect_s = min(started) - killed
    print(f"\nwithout event detection: ERS started {detect_s * 1000:.0f} ms after the kill")
    assert detect_s > 2.0
    await wait_for(lambda: recoveries(rs, ProblemKind.DEAD_PRIMARY, "succeeded"), 5,
                   "the failover to succeed")  # fmt: skip
    assert await shard.check_invariants() in ("zone1-102", "zone1-103")


async def test_the_watch_follows_a_planned_reparent_and_stops_with_the_service(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    watch = rs.service.health.primary_watch
    await wait_for(lambda: watch.watched() == {"commerce/0": "zone1-101"}, 5, "the first watch")
    await wait_for(lambda: sleeping_watches(shard, "zone1-101"), 5, "its query on zone1-101")

    await planned_reparent_shard(
        shard.env, PlannedReparentOptions("commerce", "0", new_primary="zone1-102")
    )
    await wait_for(lambda: watch.watched() == {"commerce/0": "zone1-102"}, 5, "the watch moved")
    await wait_for(lambda: sleeping_watches(shard, "zone1-102"), 5, "its query on zone1-102")
    # The old primary's watch is gone, its sleeping query too (the server notices the closed
    # connection at its next wake-up, at most a few seconds later).
    await wait_for(
        lambda: _none(sleeping_watches(shard, "zone1-101")), 10, "no watch left on zone1-101"
    )
    # Demoting the old primary is no failure: nothing but the planned reparent happened.
    await asyncio.sleep(1.0)
    assert recoveries(rs, ProblemKind.DEAD_PRIMARY) == []
    assert await shard.check_invariants() == "zone1-102"

    await rs.stop()
    assert watch.watched() == {}
    await wait_for(
        lambda: _none(sleeping_watches(shard, "zone1-102")), 10, "no watch left after the stop"
    )


async def _none(count: Awaitable[int]) -> bool:
    return await count == 0
