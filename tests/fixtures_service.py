"""The orchestrator service running in-process on a free port, against the test's shard."""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from orchestrator.service import Service
from orchestrator.settings import Settings
from tests.fixtures_cluster import Shard


@dataclass
class RunningService:
    service: Service
    task: asyncio.Task[None]
    url: str
    stopped: bool = False

    def check_alive(self) -> None:
        """AssertionError, with the service's traceback, if it ended on its own."""
        if self.task.done() and not self.stopped:
            raise AssertionError(f"the service died during the test:\n{_outcome(self.task)}")

    async def stop(self) -> None:
        """Cancel the service and wait for its structured shutdown. A service that had already
        died on its own, or whose shutdown raised, fails the test with its traceback; a shutdown
        that hangs is a bug too, reported with the stacks of every task instead of a silent
        test timeout. Stopping twice is a no-op."""
        if self.stopped:
            return
        died = self.task.done()
        self.stopped = True
        if died:
            raise AssertionError(f"the service died during the test:\n{_outcome(self.task)}")
        self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=20)
        if not done:
            for t in asyncio.all_tasks():  # by hand: print_stack fails on Cython frames
                print(f"task {t.get_name()}:", file=sys.stderr)
                for f in t.get_stack():
                    print(f"    {f.f_code.co_filename}:{f.f_lineno} {f.f_code.co_name}",
                          file=sys.stderr)  # fmt: skip
            raise AssertionError("the service did not shut down within 20 s of cancellation")
        if not self.task.cancelled() and self.task.exception() is not None:
            raise AssertionError(f"the service's shutdown raised:\n{_outcome(self.task)}")


def _outcome(task: asyncio.Task[None]) -> str:
    """How a finished service task ended: its traceback, or why there is none."""
    if task.cancelled():
        return "cancelled (by something other than the test)"
    exc = task.exception()
    if exc is None:
        return "returned without being cancelled"
    return "".join(traceback.format_exception(exc))


def settings_for(shard: Shard, **overrides: Any) -> Settings:
    creds = shard.env.creds
    base = Settings(
        etcd_endpoints=tuple(shard.state.etcd_endpoints),
        topo_root=shard.store.root,
        listen_port=0,
        mysql_user=creds.user,
        mysql_password=creds.password,
        lock_ttl_s=3,
        election_ttl_s=2,
        log_json=False,
    )
    return base.replace(**overrides)


ServiceFactory = Callable[..., Awaitable[RunningService]]


@pytest.fixture
async def service_factory() -> AsyncIterator[ServiceFactory]:
    """`await service_factory(shard, **setting_overrides)` -> a ready service and its URL."""
    running: list[RunningService] = []

    async def make(shard: Shard, **overrides: Any) -> RunningService:
        service = Service(settings_for(shard, **overrides))
        task = asyncio.create_task(service.run())
        ready = asyncio.create_task(service.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()  # raises the start-up error
        if ready not in done:
            ready.cancel()
            task.cancel()
            raise TimeoutError("service not ready within 15s")
        rs = RunningService(service, task, f"http://127.0.0.1:{service.port}")
        running.append(rs)
        return rs

    try:
        yield make
    finally:
        failures = []
        for rs in running:  # every one is stopped, even when an earlier one failed
            try:
                await rs.stop()
            except AssertionError as e:
                failures.append(str(e))
        if failures:
            raise AssertionError("\n".join(failures))


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s
