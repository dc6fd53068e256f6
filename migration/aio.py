"""Stopping helper tasks without swallowing our own cancellation, and without hanging.

`task.cancel(); with suppress(BaseException): await task` is wrong in a task that may itself be
cancelled meanwhile: the CancelledError meant for us arrives at that `await` and is suppressed,
and we run on (a worker that never stops, a service whose shutdown hangs). `cancel_and_wait`
swallows only the helper's own outcome.

The wait is bounded: a helper stuck in a call that does not end on cancellation (seen: an
etcd watch of aetcd's whose cancellation never completed, in about one service shutdown in
ten under load) is abandoned with a warning after `ABANDON_AFTER_S`, rather than holding up
its caller for ever; closing the etcd client afterwards ends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

log = structlog.get_logger(__name__)

ABANDON_AFTER_S = 5.0


async def cancel_and_wait(task: asyncio.Future[Any], timeout: float = ABANDON_AFTER_S) -> None:
    """Cancel `task` and wait until it has finished (at most `timeout`); its result or error
    is dropped, but a cancellation of the calling task still propagates."""
    await cancel_all_and_wait([task], timeout)


async def cancel_all_and_wait(
    tasks: Sequence[asyncio.Future[Any]], timeout: float = ABANDON_AFTER_S
) -> None:
    """Cancel every task first, then wait for all of them (at most `timeout`): cancelling
    and waiting one at a time stops at the first wait when the caller is itself cancelled
    meanwhile, and leaves the others running, orphaned."""
    for t in tasks:
        t.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in done:
        if not t.cancelled():
            t.exception()  # retrieved: no "exception was never retrieved" later
    for t in pending:
        name = t.get_name() if isinstance(t, asyncio.Task) else repr(t)
        log.warning("a task did not stop on cancellation; abandoned", task=name,
                    waited_s=timeout)  # fmt: skip
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError
