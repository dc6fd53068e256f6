"""`GET /console/stream`: a page's document as Server-Sent Events, pushed when it changes.

Nothing here polls. Two existing sources wake the stream: an etcd watch on the service's
topology root (shard records, tablets, locks, workflow steps as each run records them, the
recovery log, migration state) and the health checker's end-of-cycle event (`cycled`), which
carries the tablets' replication state that lives only in memory. A wake rebuilds the document
(`orchestrator.console.state`) and sends it only if it differs from the last one sent. A health
cycle that changes a verdict (a tablet down, a problem found) wakes at once, others at most one
per `HEALTH_PUSH_EVERY_S`; topology changes go out after a short `DEBOUNCE_S`, so a burst of
writes (a reparent's steps) becomes one push.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from orchestrator.commands import ArgumentError
from orchestrator.console import state
from topo.alias import check_keyspace, check_shard
from topo.errors import InvalidArgumentError

if TYPE_CHECKING:
    from orchestrator.service import Service

log = structlog.get_logger(__name__)

DEBOUNCE_S = 0.05
HEALTH_PUSH_EVERY_S = 1.0
KEEPALIVE_S = 15.0
WATCH_RETRY_S = 1.0
PAGES = ("fleet", "shard", "workflows", "recoveries")
# The streams' tasks, cancelled at the app's shutdown (before its runner waits for handlers).
STREAM_TASKS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("console_stream_tasks")


async def cancel_streams(app: web.Application) -> None:
    tasks = app[STREAM_TASKS]
    for t in list(tasks):
        t.cancel()


def _builder(service: Service, query: Any) -> Callable[[], Awaitable[dict[str, Any]]]:
    unknown = set(query) - {"page", "keyspace", "shard"}
    if unknown:
        raise ArgumentError(f"unknown query parameter(s) {', '.join(sorted(unknown))}")
    page = query.get("page", "fleet")
    if page not in PAGES:
        raise ArgumentError(f"page {page!r} is not one of {', '.join(PAGES)}", field="page")
    if page == "shard":
        try:
            ks = check_keyspace(query.get("keyspace", ""))
            shard = check_shard(query.get("shard", ""))
        except InvalidArgumentError as e:
            raise ArgumentError(str(e), field="keyspace") from None
        return state.ShardPage(service, ks, shard).build
    if page == "workflows":
        return lambda: state.workflows_page(service)
    if page == "recoveries":
        return lambda: state.recoveries_page(service)
    return lambda: state.fleet(service)


def _verdict(service: Service) -> tuple[Any, ...]:
    """What the health checks concluded, without the parts that change every cycle."""
    snap = service.health.snapshot()
    return (tuple((a, h.get("healthy"), h.get("io_running"), h.get("sql_running"))
                  for a, h in snap.items()),
            tuple((k, tuple(p["kind"] for p in v)) for k, v in service.health.problems().items()))  # fmt: skip


async def stream(service: Service, request: web.Request) -> web.StreamResponse:
    build = _builder(service, request.query)
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })  # fmt: skip
    await resp.prepare(request)
    changed = asyncio.Event()

    async def follow_topology() -> None:
        while True:
            try:
                async for _ in service.store.kv.watch(service.store.root + "/", prefix=True):
                    changed.set()
            except Exception as e:  # etcd down or the watch cut: the page says so, re-watch
                log.info("console: topology watch interrupted", error=str(e) or repr(e))
            changed.set()
            await asyncio.sleep(WATCH_RETRY_S)

    async def follow_health() -> None:
        # A change of verdict (a tablet down or back, a new problem) goes out at once; the
        # rest (ages, lag) at most every HEALTH_PUSH_EVERY_S.
        loop = asyncio.get_running_loop()
        last_verdict, last_push = None, 0.0
        while True:
            await service.health.cycled.wait()
            verdict = _verdict(service)
            if verdict != last_verdict or loop.time() - last_push >= HEALTH_PUSH_EVERY_S:
                last_verdict, last_push = verdict, loop.time()
                changed.set()

    async def pump() -> None:
        last = None
        while True:
            try:
                doc = await build()
            except Exception as e:  # etcd unavailable: show it, keep the stream
                doc = {"error": str(e) or type(e).__name__}
            body = json.dumps(doc, default=str, sort_keys=True)
            if body != last:
                await resp.write(b"event: state\ndata: " + body.encode() + b"\n\n")
                last = body
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KEEPALIVE_S):
                    await changed.wait()
            if not changed.is_set():
                await resp.write(b": keepalive\n\n")  # finds a reader that is gone
                continue
            await asyncio.sleep(DEBOUNCE_S)
            changed.clear()

    tasks = [asyncio.create_task(c, name=f"console {n}")
             for c, n in ((pump(), "push"), (follow_topology(), "watch"),
                          (follow_health(), "health"))]  # fmt: skip
    main = tasks[0]
    tracked = request.app[STREAM_TASKS]
    tracked.update(tasks)
    try:
        # The handler is not cancelled when the client leaves: check the transport, so a
        # stream never outlives its reader.
        while not main.done():
            await asyncio.wait({main}, timeout=0.5)
            transport = request.transport
            if transport is None or transport.is_closing():
                break
    finally:
        for t in tasks:
            t.cancel()
        tracked.difference_update(tasks)
        await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await resp.write_eof()
    return resp
