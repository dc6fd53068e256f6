"""The in-process service fixture never hides a dead service: a service whose task tree raised
during the test fails the test at teardown, with the traceback."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.service import Service
from tests.fixtures_cluster import ShardFactory
from tests.fixtures_service import RunningService, settings_for


async def test_a_service_that_crashed_fails_the_test_with_its_traceback(
    shard_factory: ShardFactory,
) -> None:
    shard = await shard_factory(tablets=1)
    service = Service(settings_for(shard))

    async def health_crashes() -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("injected health-check crash")

    service.health.run = health_crashes  # type: ignore[method-assign]
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.ready.wait(), 15)
    rs = RunningService(service, task, f"http://127.0.0.1:{service.port}")
    await asyncio.wait({task}, timeout=10)
    assert task.done()
    with pytest.raises(AssertionError, match="died during the test") as err:
        await rs.stop()
    assert "injected health-check crash" in str(err.value)
    assert "Traceback" in str(err.value)
    await rs.stop()  # already handled: a second stop is a no-op
