"""Helpers shared by the health and recovery service tests: fast settings, polling, and the
service's recovery records."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from orchestrator.health.analysis import ProblemKind
from tests.fixtures_cluster import Shard, Writer
from tests.fixtures_service import RunningService, ServiceFactory

FAST = {
    "health_interval_s": 0.3,
    "health_timeout_s": 0.3,
    "lock_ttl_s": 3,
    "election_ttl_s": 2,
    "unhealthy_checks_to_spare": 3,
}


async def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `cond` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def start_service(
    shard: Shard, service_factory: ServiceFactory, **overrides: Any
) -> RunningService:
    """The service, leader, with every tablet checked healthy at least once."""
    rs = await service_factory(shard, **{**FAST, **overrides})
    health = rs.service.health
    await wait_for(lambda: rs.service.election.is_leader, 10, "leadership")
    await wait_for(
        lambda: (snap := health.snapshot()) and all(
            snap.get(a, {}).get("healthy") for a in shard.aliases
        ),
        10, "every tablet checked healthy",
    )  # fmt: skip
    return rs


def first_write_after_failure(writer: Writer, since: float) -> float | None:
    """When the first write acknowledged by the new primary was: the first acknowledgement
    after `since` that follows a failed write (the writer skips the id of a failed write). An
    acknowledgement recorded just after the kill, without a failure before it, was the old
    primary's, received before it died."""
    prev = None
    for i, t in writer.acked:
        if t > since and prev is not None and i != prev + 1:
            return t
        prev = i
    return None


def recoveries(rs: RunningService, problem: ProblemKind, result: str | None = None) -> list[dict]:
    return [
        e for e in rs.service.health.recoveries()
        if e["problem"] == problem.value and (result is None or e["result"] == result)
    ]  # fmt: skip
