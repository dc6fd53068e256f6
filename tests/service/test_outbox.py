"""Outgoing events survive a receiver outage and an orchestrator restart: they are in etcd
before any delivery, delivered (signed) once the receiver is back, and removed only when every
URL has acknowledged them; a URL that already acknowledged is not sent an event again."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from orchestrator import metrics
from orchestrator.events import (
    RECOVERY_RUN,
    REPARENT_FAILED,
    REPARENT_STARTED,
    REPARENT_SUCCEEDED,
    TABLET_TYPE_CHANGED,
)
from orchestrator.signing import EVENT_ID_HEADER, SignatureError, verify
from tests.fixtures_cluster import Shard, ShardFactory
from tests.fixtures_service import RunningService, ServiceFactory
from tests.helpers.health import FAST, wait_for
from tests.helpers.ports import reserve_port
from tests.helpers.service_proc import ServiceProc

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


def failed_deliveries() -> float:
    """Failed delivery attempts so far, in this process (the services run in-process)."""
    return float(metrics.WEBHOOK_DELIVERIES.labels("failed")._value.get())


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
    failed_before = failed_deliveries()
    await wait_for(lambda: failed_deliveries() >= failed_before + 2, 10,
                   "a few failed delivery attempts")  # fmt: skip
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
    failed_before = failed_deliveries()
    await wait_for(lambda: failed_deliveries() >= failed_before + 1, 10,
                   "the new leader to fail a delivery too")  # fmt: skip

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


@dataclass
class FlakyReceiver(Receiver):
    """Refuses (HTTP 500) the first `fail` attempts, then acknowledges; remembers when each
    attempt came, per event id."""

    fail: int = 0
    attempts: dict[str, list[float]] = field(default_factory=dict)

    async def _hook(self, request: web.Request) -> web.Response:
        event_id = request.headers.get(EVENT_ID_HEADER, "")
        tries = self.attempts.setdefault(event_id, [])
        tries.append(time.monotonic())
        if sum(len(t) for t in self.attempts.values()) <= self.fail:
            return web.Response(status=500, text="not now")
        return await super()._hook(request)


async def test_a_receiver_that_fails_n_times_gets_each_event_once_with_growing_gaps(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=1)
    receiver = FlakyReceiver(fail=5)
    await receiver.start()
    try:
        opts = {"webhook_secret": SECRET, "webhook_urls": (receiver.url,),
                "recoveries_enabled": False}  # fmt: skip
        rs = await service_factory(shard, **opts)
        await leader(rs)
        published = [await rs.service.events.publish("test.event", {"n": n}) for n in range(3)]

        async def all_delivered() -> bool:
            return receiver.ids >= set(published) and not await outbox(shard)

        await until(all_delivered, 30, "every event delivered after the receiver's failures")
    finally:
        await receiver.stop()
        receiver.close()
    ours = [e["id"] for e in receiver.received if e["kind"] == "test.event"]
    assert ours == published, "each event acknowledged exactly once, in order"
    assert receiver.bad_signatures == []
    # The first event took every failure: its retries come at growing intervals (backoff).
    tries = receiver.attempts[published[0]]
    assert len(tries) == 6, tries
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    print("gaps between tries (s):", [round(g, 3) for g in gaps])
    assert all(b > a for a, b in itertools.pairwise(gaps)), f"gaps do not grow: {gaps}"
    assert gaps[-1] >= 4 * gaps[0], f"no exponential backoff: {gaps}"
    # The later events were each sent once: no failure left for them.
    assert [len(receiver.attempts[i]) for i in published[1:]] == [1, 1]


async def test_events_survive_a_sigkill_of_the_delivering_instance(
    shard_factory: ShardFactory, tmp_path: Path
) -> None:
    shard = await shard_factory(tablets=3)
    receiver = Receiver()  # down: the port is held, connections refused
    env = {"ORC_WEBHOOK_SECRET": SECRET, "ORC_WEBHOOK_URLS": receiver.url,
           "ORC_DISABLE_ACTIVE_REPARENTS": "false"}  # fmt: skip
    procs: list[ServiceProc] = []
    try:
        first = await ServiceProc.start(shard, tmp_path / "serve-1.log", env=env)
        procs.append(first)
        await first.wait_leader(shard)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{first.url}/api/v1/commands/PlannedReparentShard",
                json={"keyspace_shard": "commerce/0", "new_primary": "zone1-102"},
            ) as resp:
                assert resp.status == 200, await resp.text()
        queued = await outbox(shard)
        kinds = [e["kind"] for e in queued if e["kind"].startswith("reparent.")]
        assert kinds == [REPARENT_STARTED, REPARENT_SUCCEEDED], kinds

        first.proc.kill()  # SIGKILL while it keeps retrying the delivery
        assert await first.wait_exit(10) == -9
        assert {e["id"] for e in await outbox(shard)} == {e["id"] for e in queued}

        await receiver.start()
        second = await ServiceProc.start(shard, tmp_path / "serve-2.log", env=env)
        procs.append(second)
        await second.wait_leader(shard, timeout=20)  # the dead leader's key expires first

        async def delivered() -> bool:
            return receiver.ids >= {e["id"] for e in queued} and not await outbox(shard)

        await until(delivered, 30, "the events queued before the SIGKILL to be delivered")
    finally:
        for p in procs:
            await p.stop()
        await receiver.stop()
        receiver.close()
    assert receiver.bad_signatures == []
    got = [e["id"] for e in receiver.received if e["id"] in {q["id"] for q in queued}]
    assert sorted(got) == sorted(e["id"] for e in queued), "an event lost or repeated"


async def test_failed_reparents_type_changes_and_recoveries_are_emitted(
    shard_factory: ShardFactory,
    service_factory: ServiceFactory,
    receivers: Callable[[], Receiver],
    http: aiohttp.ClientSession,
) -> None:
    shard = await shard_factory(tablets=3)
    receiver = receivers()
    await receiver.start()
    rs = await service_factory(shard, webhook_secret=SECRET, webhook_urls=(receiver.url,), **FAST)
    await leader(rs)

    # A reparent that fails: its precondition does not hold.
    async with http.post(
        f"{rs.url}/api/v1/commands/PlannedReparentShard",
        json={
            "keyspace_shard": "commerce/0",
            "new_primary": "zone1-102",
            "expected_primary": "zone1-103",
        },
    ) as resp:
        assert resp.status == 409, await resp.text()  # fmt: skip
    # A replica that dies: the health checks make it spare (a recovery, and a type change).
    shard.server("zone1-103").kill()

    def kinds() -> set[str]:
        return {e["kind"] for e in receiver.received}

    await wait_for(lambda: {REPARENT_FAILED, TABLET_TYPE_CHANGED, RECOVERY_RUN} <= kinds(), 20,
                   "reparent.failed, tablet.type_changed and recovery.run")  # fmt: skip
    failed = next(e for e in receiver.received if e["kind"] == REPARENT_FAILED)
    assert failed["payload"]["action"] == "PlannedReparentShard"
    assert "zone1-103" in failed["payload"]["error"], failed
    changed = next(e for e in receiver.received if e["kind"] == TABLET_TYPE_CHANGED)
    assert changed["payload"]["alias"] == "zone1-103" and changed["payload"]["to"] == "spare"
    run = [e["payload"] for e in receiver.received if e["kind"] == RECOVERY_RUN]
    assert any(p.get("tablet") == "zone1-103" for p in run), run
    assert receiver.bad_signatures == []
