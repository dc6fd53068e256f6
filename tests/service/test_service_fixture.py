"""The service harnesses never hide a dead service: an in-process service whose task tree raised
during the test fails the test at teardown, with the traceback; a service process that exited
without the test waiting for it fails the test when stopped, with its log."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from orchestrator.service import Service
from tests.fixtures_cluster import ShardFactory
from tests.fixtures_service import RunningService, settings_for
from tests.helpers.service_proc import ServiceProc


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


async def test_a_service_process_that_died_unawaited_fails_the_test(
    shard_factory: ShardFactory, tmp_path: Path
) -> None:
    shard = await shard_factory(tablets=1)
    proc = await ServiceProc.start(shard, tmp_path / "serve.log")
    os.kill(proc.pid, signal.SIGKILL)  # as a crash would: the test is not waiting for it
    await proc.proc.wait()
    with pytest.raises(AssertionError, match="died during the test"):
        await proc.stop()
    await proc.stop()  # reported once
