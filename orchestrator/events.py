"""Outgoing events: written to an outbox in etcd first, then delivered to webhook URLs.

Publishing (any instance) writes the event to `{root}/global/outbox/<time_ns:020d>-<id>` and
returns; nothing is sent before the event is in etcd, so a crash or restart never loses one.
Delivery (the leader only) drains the outbox in key order:

1. every instance follows the outbox prefix with an etcd watch (a read, then a watch from the
   revision of that read), so it knows the pending events (`depth()`, for metrics) and is woken
   by new ones without polling;
2. the leader runs one worker per configured URL; a worker POSTs the oldest event that URL has
   not acknowledged (signed like inbound webhooks, see `orchestrator.signing`, with the event id
   in `X-Orchestrator-Event-Id`) and, on failure, retries that same event with exponential
   backoff, so each URL sees events in order;
3. a 2xx answer is recorded in the event (`delivered`, compare-and-swap), so a URL that already
   acknowledged is not sent the event again after a restart or a change of leader; the worker
   whose acknowledgement completes the set deletes the event (compare-and-swap again).

Delivery is at least once (a crash between the POST and the record of its answer repeats it);
receivers drop duplicates by event id. With no webhook URLs configured nothing is written:
events are only logged, since nothing would ever drain them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog

from orchestrator import metrics
from orchestrator.signing import EVENT_ID_HEADER, sign
from topo.errors import BadVersionError, NoNodeError, TopoError
from topo.kv import KeyValue

if TYPE_CHECKING:
    from orchestrator.service import Service

log = structlog.get_logger(__name__)

BACKOFF_START_S = 0.2
BACKOFF_CAP_S = 10.0
REQUEST_TIMEOUT_S = 5.0
CAS_RETRIES = 50

# Event kinds published by the service (payloads are small JSON objects).
REPARENT_STARTED = "reparent.started"
REPARENT_SUCCEEDED = "reparent.succeeded"
REPARENT_FAILED = "reparent.failed"
TABLET_TYPE_CHANGED = "tablet.type_changed"
RECOVERY_RUN = "recovery.run"
DDL_LOCK_WAITING = "ddl_lock.waiting"  # a sharding DDL lock older than ddl_lock_alert_s


def wire_body(event: dict[str, Any]) -> bytes:
    """What a receiver gets: the event without our delivery bookkeeping."""
    public = {k: event[k] for k in ("id", "kind", "time", "instance_id", "payload") if k in event}
    return json.dumps(public, sort_keys=True, separators=(",", ":")).encode()


@dataclass
class _Pending:
    key: str
    event: dict[str, Any]
    mod_revision: int

    @property
    def delivered(self) -> set[str]:
        return set(self.event.get("delivered") or ())


@dataclass
class ReparentEvents:
    """Set `result` (a dict) inside `EventBus.reparent(...)` to include it in the success event."""

    result: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EventBus:
    """Publish events to the etcd outbox; deliver them (leader only) until acknowledged."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.store = service.store
        self.prefix = f"{service.store.root}/global/outbox/"
        self.urls: tuple[str, ...] = tuple(service.settings.webhook_urls)
        self.request_timeout = REQUEST_TIMEOUT_S
        self.backoff_start = BACKOFF_START_S
        self.backoff_cap = BACKOFF_CAP_S
        self._pending: dict[str, _Pending] = {}
        self._deleted: set[str] = set()
        self._changed = asyncio.Event()
        self.delivered_count = 0
        self.log = log.bind(instance_id=service.settings.instance_id)

    # -- publishing -----------------------------------------------------------------------

    def key_for(self, event: dict[str, Any]) -> str:
        return f"{self.prefix}{event['time_ns']:020d}-{event['id']}"

    async def publish(self, kind: str, payload: dict[str, Any]) -> str:
        """Write one event to the outbox (before any delivery); returns its id.

        Raises TopoError if etcd refuses the write: the caller then knows the event was not
        recorded."""
        now_ns = time.time_ns()
        event: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "kind": kind,
            "time": now_ns / 1e9,
            "time_ns": now_ns,
            "instance_id": self.settings.instance_id,
            "payload": payload,
            "delivered": [],
        }
        if not self.urls:
            self.log.info("event (no webhook urls; not queued)", kind=kind, event_id=event["id"],
                          payload=payload)  # fmt: skip
            return str(event["id"])
        key = self.key_for(event)
        body = json.dumps(event, sort_keys=True, default=str).encode()
        kv = await self.store.kv.create(key, body)
        self._apply(key, kv.value, kv.mod_revision)
        self.log.info("event queued", kind=kind, event_id=event["id"])
        return str(event["id"])

    async def publish_quietly(self, kind: str, payload: dict[str, Any]) -> str | None:
        """`publish`, but an etcd failure is logged instead of raised (for notifications that
        must not fail the operation they describe)."""
        try:
            return await self.publish(kind, payload)
        except TopoError as e:
            self.log.warning("could not queue event", kind=kind, error=str(e))
            return None

    @contextlib.asynccontextmanager
    async def reparent(self, action: str, args: dict[str, Any]) -> AsyncIterator[ReparentEvents]:
        """Publish reparent.started, then reparent.succeeded (with `ev.result`) or
        reparent.failed (with the error) around the body. Publishing never fails the body."""
        ev = ReparentEvents()
        base = {"action": action, "args": args}
        await self.publish_quietly(REPARENT_STARTED, base)
        try:
            yield ev
        except BaseException as e:
            await self.publish_quietly(
                REPARENT_FAILED,
                {**base, **ev.extra, "error": str(e) or type(e).__name__,
                 "error_type": type(e).__name__, "code": getattr(e, "code", None)},
            )  # fmt: skip
            raise
        await self.publish_quietly(REPARENT_SUCCEEDED, {**base, **ev.extra, "result": ev.result})

    def depth(self) -> int:
        """Events in the outbox not yet acknowledged by every URL (as this instance sees it)."""
        return len(self._pending)

    # -- following the outbox -------------------------------------------------------------

    def _apply(self, key: str, value: bytes | None, mod_revision: int) -> None:
        """Fold one read or watch event into the pending set (replays of older revisions are
        ignored) and wake the workers."""
        current = self._pending.get(key)
        if current is not None and current.mod_revision > mod_revision:
            return
        if value is None:
            self._pending.pop(key, None)
            self._deleted.add(key)  # outbox keys are never reused: a late put is a replay
        elif key in self._deleted:
            return
        else:
            try:
                event = json.loads(value)
            except ValueError:
                self.log.error("unreadable outbox entry; skipped", key=key)
                return
            self._pending[key] = _Pending(key, event, mod_revision)
        self._wake()

    def _wake(self) -> None:
        metrics.OUTBOX_DEPTH.set(len(self._pending))
        self._changed.set()
        self._changed = asyncio.Event()

    async def _follow(self) -> None:
        """Keep `_pending` equal to the outbox: read it, then watch it from that revision."""
        delay = self.backoff_start
        while True:
            try:
                revision = await self.store.kv.revision()
                items = await self.store.kv.get_prefix(self.prefix)
                # The read is the truth up to `revision`; anything newer came from our own
                # publish and will be confirmed (or removed) by the watch.
                seen = {kv.key for kv in items}
                for key, p in list(self._pending.items()):
                    if key not in seen and p.mod_revision <= revision:
                        del self._pending[key]
                if len(self._deleted) > 10_000:  # tombstones only matter for watch replays
                    self._deleted &= seen
                for kv in items:
                    self._apply(kv.key, kv.value, kv.mod_revision)
                self._wake()
                delay = self.backoff_start
                async for ev in self.store.kv.watch(
                    self.prefix, prefix=True, start_revision=revision + 1
                ):
                    self._apply(ev.key, ev.value, ev.mod_revision)
            except Exception as e:  # etcd down, watch compacted or cut: read again, re-watch
                self.log.warning("outbox watch interrupted; resyncing", error=str(e) or repr(e))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_cap)

    # -- delivery -------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the outbox always; deliver it while this instance is the leader."""
        if not self.urls:
            self.log.info("no webhook urls configured; events are logged, not delivered")
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._follow(), name="outbox-follow")
            if self.urls:
                tg.create_task(self._deliver_while_leader(), name="outbox-deliver")

    async def _deliver_while_leader(self) -> None:
        election = self.service.election
        while True:
            changed = election.changed
            if not election.is_leader:
                await changed.wait()
                continue
            self.log.info("outbox delivery started (leader)", urls=list(self.urls))
            async with aiohttp.ClientSession() as session:
                workers = [
                    asyncio.create_task(self._worker(session, url), name=f"outbox-{url}")
                    for url in self.urls
                ]
                try:
                    while election.is_leader:
                        await election.changed.wait()
                finally:
                    for w in workers:
                        w.cancel()
                    await asyncio.gather(*workers, return_exceptions=True)
            self.log.info("outbox delivery stopped (no longer leader)")

    def _next_for(self, url: str, done: set[str]) -> _Pending | None:
        """The oldest event `url` has not acknowledged."""
        for key in sorted(self._pending):
            p = self._pending[key]
            if key in done:
                continue
            if url in p.delivered:
                if set(self.urls) <= p.delivered:
                    return p  # everyone acknowledged but nobody deleted it (config changed)
                continue
            return p
        return None

    async def _worker(self, session: aiohttp.ClientSession, url: str) -> None:
        """Deliver to one URL, in key order, each event until it is acknowledged."""
        done: set[str] = set()  # acknowledged by this URL (before the watch shows it)
        delay = self.backoff_start
        attempts = 0
        while True:
            changed = self._changed
            done &= set(self._pending)
            p = self._next_for(url, done)
            if p is None:
                await changed.wait()
                continue
            sent = url not in p.delivered
            try:
                if sent:
                    await self._post(session, url, p.event)
                await self._ack(p.key, url)
            except Exception as e:  # refused, unreachable, timed out, etcd trouble: retry
                metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
                attempts += 1
                self.log.warning("event delivery failed; will retry", url=url,
                                 event_id=p.event.get("id"), kind=p.event.get("kind"),
                                 attempt=attempts, retry_in_s=round(delay, 2), error=str(e) or repr(e))  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff_cap)
                continue
            done.add(p.key)
            if sent:
                metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
                self.delivered_count += 1
            if attempts:
                self.log.info("event delivered after retries", url=url,
                              event_id=p.event.get("id"), attempts=attempts + 1)  # fmt: skip
            delay = self.backoff_start
            attempts = 0

    async def _post(self, session: aiohttp.ClientSession, url: str, event: dict[str, Any]) -> None:
        body = wire_body(event)
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: str(event["id"])}
        if self.settings.webhook_secret:
            headers.update(sign(self.settings.webhook_secret, body))
        timeout = aiohttp.ClientTimeout(total=self.request_timeout)
        async with session.post(url, data=body, headers=headers, timeout=timeout) as resp:
            if not 200 <= resp.status < 300:
                text = (await resp.text())[:200]
                raise _RefusedError(f"{url} answered {resp.status}: {text}")

    async def _ack(self, key: str, url: str) -> None:
        """Record that `url` acknowledged the event; delete it once every URL has."""
        kv_store = self.store.kv
        for _ in range(CAS_RETRIES):
            kv: KeyValue | None = await kv_store.get(key)
            if kv is None:
                return
            event = json.loads(kv.value)
            delivered = set(event.get("delivered") or ()) | {url}
            try:
                if set(self.urls) <= delivered:
                    await kv_store.delete(key, expected_revision=kv.mod_revision)
                    self._apply(key, None, kv.mod_revision + 1)
                    self.log.info("event delivered", event_id=event.get("id"),
                                  kind=event.get("kind"))  # fmt: skip
                else:
                    event["delivered"] = sorted(delivered)
                    new = await kv_store.update(
                        key, json.dumps(event, sort_keys=True).encode(), kv.mod_revision
                    )
                    self._apply(key, new.value, new.mod_revision)
                return
            except NoNodeError:
                return
            except BadVersionError:
                continue
        raise BadVersionError(key, 0)


class _RefusedError(Exception):
    """The receiver answered with a non-2xx status."""
