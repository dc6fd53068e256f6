"""The orchestrator service running in-process on a free port, against the test's shard."""

from __future__ import annotations

import asyncio
import contextlib
import sys
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

    async def stop(self) -> None:
        """Cancel the service and wait for its structured shutdown; a shutdown that hangs is a
        bug, reported with the stacks of every task instead of a silent test timeout."""
        self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=20)
        if not done:
            for t in asyncio.all_tasks():
                t.print_stack(file=sys.stderr)
            raise AssertionError("the service did not shut down within 20 s of cancellation")
        with contextlib.suppress(asyncio.CancelledError, Exception):
            self.task.result()


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
        for rs in running:
            await rs.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        yield s
