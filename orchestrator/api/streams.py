"""Background work started by requests: command runs and watch streams, tracked per app so that
shutdown can end them in order.

A command runs in a task of its own, not in the request's: a client that disconnects in the
middle of a PlannedReparentShard must not cancel it half-way (its record in etcd shows how it
ended). At shutdown, watch streams are cancelled at once and running commands get a grace
period to finish before they are cancelled (a cancelled workflow releases its lock and records
itself as failed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)

T = TypeVar("T")

COMMAND_TASKS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("command_tasks")
STREAM_TASKS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("stream_tasks")

SHUTDOWN_GRACE_S = 10.0


def spawn_command(app: web.Application, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
    task = asyncio.create_task(coro, name=name)
    tasks = app[COMMAND_TASKS]
    tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
        if not t.cancelled():
            t.exception()  # retrieved: the request handler reports it (or its client left)

    task.add_done_callback(done)
    return task


@contextlib.contextmanager
def track_stream(app: web.Application, task: asyncio.Task[Any]) -> Iterator[None]:
    tasks = app[STREAM_TASKS]
    tasks.add(task)
    try:
        yield
    finally:
        tasks.discard(task)
        if not task.done():
            task.cancel()


async def on_shutdown(app: web.Application) -> None:
    streams: set[asyncio.Task[Any]] = app[STREAM_TASKS]
    for t in list(streams):
        t.cancel()
    commands: set[asyncio.Task[Any]] = app[COMMAND_TASKS]
    running = list(commands)
    if running:
        log.info("waiting for running commands before shutdown", count=len(running),
                 grace_s=SHUTDOWN_GRACE_S)  # fmt: skip
        _, pending = await asyncio.wait(running, timeout=SHUTDOWN_GRACE_S)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


def setup(app: web.Application) -> None:
    app[COMMAND_TASKS] = set()
    app[STREAM_TASKS] = set()
    app.on_shutdown.append(on_shutdown)
