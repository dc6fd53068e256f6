"""`topo.kv._create_watch`: a caller waiting for aetcd to create a watch leaves at once when it
is cancelled or times out, however aetcd's creation behaves on cancellation (it may have to
re-acquire a lock held elsewhere before it can finish), and a watch created after the caller
left is cancelled. Pure asyncio: the creation is a coroutine of the test's own standing in for
aetcd's internals; the watch path against a real etcd is covered by tests/test_topo.py."""

from __future__ import annotations

import asyncio
import time

import pytest

from topo.errors import TopoUnavailableError
from topo.kv import _create_watch


class FakeWatch:
    def __init__(self) -> None:
        self.cancelled = asyncio.Event()

    async def cancel(self) -> None:
        self.cancelled.set()


async def _stubborn(held: asyncio.Lock, arrived: asyncio.Event, watch: FakeWatch) -> FakeWatch:
    """Like aetcd's add_callback: a cancellation must re-acquire a lock before it ends."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        async with held:  # held by someone else for as long as the test likes
            pass
        arrived.set()
        return watch  # and it may even complete, swallowing the cancellation
    return watch


async def test_a_cancelled_caller_leaves_at_once_and_a_late_watch_is_cancelled() -> None:
    held = asyncio.Lock()
    await held.acquire()
    arrived = asyncio.Event()
    watch = FakeWatch()
    caller = asyncio.create_task(_create_watch(_stubborn(held, arrived, watch), "/k", 30))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert time.monotonic() - started < 0.1  # not blocked behind the held lock
    held.release()  # the creation can now end: it returns a watch nobody waits for
    await asyncio.wait_for(arrived.wait(), 2)
    await asyncio.wait_for(watch.cancelled.wait(), 2)


async def test_no_answer_within_the_timeout_is_topo_unavailable() -> None:
    held = asyncio.Lock()
    await held.acquire()
    started = time.monotonic()
    with pytest.raises(TopoUnavailableError, match=r"no answer from etcd within 0\.2s"):
        await _create_watch(_stubborn(held, asyncio.Event(), FakeWatch()), "/k", 0.2)
    assert time.monotonic() - started < 0.5
    held.release()


async def test_a_watch_created_in_time_is_returned() -> None:
    watch = FakeWatch()

    async def quick() -> FakeWatch:
        await asyncio.sleep(0.01)
        return watch

    assert await _create_watch(quick(), "/k", 1) is watch
    assert not watch.cancelled.is_set()
