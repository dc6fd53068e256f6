"""Outgoing events survive a receiver outage and an orchestrator restart: they are in etcd
before any delivery, delivered (signed) once the receiver is back, and removed only when every
URL has acknowledged them; a URL that already acknowledged is not sent an event again."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from orchestrator.events import REPARENT_STARTED, REPARENT_SUCCEEDED
from orchestrator.signing import EVENT_ID_HEADER, SignatureError, verify
from tests.fixtures_cluster import Shard, ShardFactory
from tests.fixtures_service import RunningService, ServiceFactory
from tests.helpers.ports import reserve_port

SECRET = "outbox-secret"


@dataclass
class Receiver:
    """A webhook receiver on a port of its own that can be stopped and started again (the port
    stays bound by this process meanwhile, refusing connections); it records every event it is
    sent and checks each one's signature."""

    received: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: list[str] = field(default_factory=list)
    _sock: socket.socket = field(default_factory=reserve_port)
    _runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def ids(self) -> set[str]:
        return {e["id"] for e in self.received}

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            verify(SECRET, request.headers, body, max_age_s=60)
        except SignatureError as e:
            self.bad_signatures.append(e.reason)
            return web.Response(status=401)
        event = json.loads(body)
        assert request.headers[EVENT_ID_HEADER] == event["id"]
        self.received.append(event)
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self._sock.listen()
        self._sock.setblocking(False)
        await web.SockSite(self._runner, self._sock).start()

    async def stop(self) -> None:
        """Down again; the port is re-bound at once (not listening), so it stays ours."""
        if self._runner is not None:
            port = self.port
            await self._runner.cleanup()  # closes the listening socket
            self._runner = None
            self._sock = reserve_port(port)

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[[], Receiver]]:
    made: list[Receiver] = []

    def make() -> Receiver:
        made.append(Receiver())
        return made[-1]

    yield make
    for r in made:
        await r.stop()
        r.close()


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def outbox(shard: Shard) -> list[dict[str, Any]]:
    kvs = await shard.store.kv.get_prefix(f"{shard.store.root}/global/outbox/")
    return [json.loads(kv.value) for kv in kvs]


async def leader(running: RunningService) -> None:
    async def is_leader() -> bool:
        return running.service.is_leader

    await until(is_leader, 15, "the service to lead")


async def test_events_survive_receiver_outage_and_service_restart(
    shard_factory: ShardFactory,
    service_factory: ServiceFactory,
    receivers: Callable[[], Receiver],
    http: aiohttp.ClientSession,
) -> None:
    shard = await shard_factory(tablets=2)
    receiver = receivers()  # not started: down
    opts = {"webhook_secret": SECRET, "webhook_urls": (receiver.url,), "recoveries_enabled": False}
    first = await service_factory(shard, **opts)
    await leader(first)
    bus = first.service.events

    published = [await bus.publish("test.event", {"n": n}) for n in range(3)]
    # A real reparent through the API: the service publishes events around it.
    async with http.post(
        f"{first.url}/api/v1/commands/PlannedReparentShard",
        json={"keyspace_shard": "commerce/0", "new_primary": "zone1-102"},
    ) as resp:
        assert resp.status == 200, await resp.text()
    assert await shard.check_invariants() == "zone1-102"

    # Everything is in etcd before any delivery (health may add recovery.* events of its own).
    queued = await outbox(shard)
    assert bus.depth() == len(queued)
    reparent_events = [e for e in queued if e["kind"].startswith("reparent.")]
    assert [e["kind"] for e in reparent_events] == [REPARENT_STARTED, REPARENT_SUCCEEDED]
    published += [e["id"] for e in reparent_events]
    assert set(published) <= {e["id"] for e in queued}
    await asyncio.sleep(1.0)  # a few failed delivery attempts
    assert bus.delivered_count == 0

    await first.stop()
    second = await service_factory(shard, **opts)
    await leader(second)
    published.append(await second.service.events.publish("test.event", {"n": "after restart"}))

    async def depth_seen() -> bool:
        return second.service.events.depth() >= len(queued) + 1

    await until(depth_seen, 5, "the restarted service to see the whole outbox")
    before = {e["id"] for e in await outbox(shard)}
    assert set(published) <= before
    await asyncio.sleep(0.5)  # the new leader fails a few times too

    await receiver.start()

    async def all_delivered() -> bool:
        return receiver.ids >= before and not await outbox(shard)

    await until(all_delivered, 30, "every event to be delivered and the outbox emptied")
    assert receiver.bad_signatures == []
    ids = [e["id"] for e in receiver.received]
    assert len(ids) == len(set(ids)), "duplicates without any failure"
    # By id exactly the events we caused, in the order they were published.
    ours = [e["id"] for e in receiver.received if e["kind"].startswith(("test.", "reparent."))]
    assert ours == published
    assert second.service.events.depth() == 0
    succeeded = next(e for e in receiver.received if e["kind"] == REPARENT_SUCCEEDED)
    assert succeeded["payload"]["result"]["new_primary"] == "zone1-102"
    assert succeeded["payload"]["action"] == "PlannedReparentShard"


async def test_url_that_acknowledged_is_not_sent_the_event_again_after_restart(
    shard_factory: ShardFactory,
    service_factory: ServiceFactory,
    receivers: Callable[[], Receiver],
) -> None:
    shard = await shard_factory(tablets=1)
    up, down = receivers(), receivers()
    await up.start()
    opts = {
        "webhook_secret": SECRET,
        "webhook_urls": (up.url, down.url),
        "recoveries_enabled": False,
    }
    first = await service_factory(shard, **opts)
    await leader(first)
    published = [await first.service.events.publish("test.event", {"n": n}) for n in range(3)]

    async def acked_by_up() -> bool:
        records = await outbox(shard)
        return len(records) == 3 and all(r["delivered"] == [up.url] for r in records)

    await until(acked_by_up, 10, "the live URL's acknowledgements to be recorded")
    assert up.ids == set(published)

    await first.stop()
    second = await service_factory(shard, **opts)
    await leader(second)
    await down.start()

    async def drained() -> bool:
        return down.ids == set(published) and not await outbox(shard)

    await until(drained, 30, "the second URL to get every event")
    assert len(up.received) == 3, "a URL that acknowledged was sent an event again"
    assert up.bad_signatures == down.bad_signatures == []


async def test_only_the_leader_delivers_and_followers_track_depth(
    shard_factory: ShardFactory,
    service_factory: ServiceFactory,
    receivers: Callable[[], Receiver],
) -> None:
    shard = await shard_factory(tablets=1)
    receiver = receivers()
    opts = {"webhook_secret": SECRET, "webhook_urls": (receiver.url,), "recoveries_enabled": False}
    a = await service_factory(shard, **opts)
    await leader(a)
    b = await service_factory(shard, **opts)
    assert not b.service.is_leader
    event_id = await b.service.events.publish("test.event", {"from": "follower"})

    async def both_see_it() -> bool:
        return a.service.events.depth() == 1 and b.service.events.depth() == 1

    await until(both_see_it, 5, "both instances to see the queued event")
    await receiver.start()

    async def delivered() -> bool:
        return receiver.ids == {event_id} and b.service.events.depth() == 0

    await until(delivered, 15, "delivery by the leader")
    assert a.service.events.delivered_count == 1
    assert b.service.events.delivered_count == 0
