"""Stopping a helper task without swallowing our own cancellation.

`task.cancel(); with suppress(BaseException): await task` is wrong in a task that may itself be
cancelled meanwhile: the CancelledError meant for us arrives at that `await` and is suppressed,
and we run on (a worker that never stops, a service whose shutdown hangs). `cancel_and_wait`
swallows only the helper's own outcome.
"""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Future[object] | asyncio.Task[object]) -> None:
    """Cancel `task` and wait until it has finished; its result or error is dropped, but a
    cancellation of the calling task still propagates."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        pass
