"""Inbound webhook: an external tool moves the primary with plain SQL, then tells us with a
signed POST; unsigned, badly signed, stale and replayed requests are refused and run nothing.

Each test runs against the service's own route and, as a cross-check independent of the API
module, against a tiny aiohttp app of the test's own that mounts `handle_external_reparent`.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from orchestrator.service import Service
from orchestrator.signing import SIGNATURE_HEADER, sign
from orchestrator.webhooks import ROUTE, handle_external_reparent
from tests.fixtures_cluster import Shard, ShardFactory
from tests.fixtures_service import RunningService, ServiceFactory
from topo.records import WorkflowRecord
from workflows.externally_reparented import ACTION

SECRET = "hook-secret"


async def manual_switch(shard: Shard, new: str, old: str) -> None:
    """What an external failover tool does, in plain SQL: promote `new`, demote `old` and
    repoint it and every other replica at `new`."""
    creds = shard.env.creds
    n = shard.server(new)
    await shard.admin(new).execute("STOP SLAVE")
    await shard.admin(new).execute("RESET SLAVE ALL")
    await shard.admin(new).execute("SET GLOBAL read_only=0")
    await shard.admin(old).execute("SET GLOBAL read_only=1")
    for alias in shard.aliases:
        if alias == new:
            continue
        await shard.admin(alias).set_replication_source(
            n.host, n.port, user=creds.user, password=creds.password, semi_sync=False,
            from_own_binlog=alias == old,
        )  # fmt: skip


@dataclass
class Target:
    """Where the webhook is posted, and the service behind it."""

    url: str
    running: RunningService
    shard: Shard

    @property
    def service(self) -> Service:
        return self.running.service


async def own_app(service: Service) -> tuple[str, Callable[[], Awaitable[None]]]:
    """A tiny app of the test's own that mounts only the webhook handler."""
    app = web.Application()
    app.router.add_post(ROUTE, functools.partial(handle_external_reparent, service))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return f"http://127.0.0.1:{port}{ROUTE}", runner.cleanup


@pytest.fixture(params=["service-route", "own-app"])
async def target(
    request: pytest.FixtureRequest,
    shard_factory: ShardFactory,
    service_factory: ServiceFactory,
    http: aiohttp.ClientSession,
) -> AsyncIterator[Target]:
    shard = await shard_factory(tablets=3)
    running = await service_factory(shard, webhook_secret=SECRET, recoveries_enabled=False)
    if request.param == "own-app":
        url, cleanup = await own_app(running.service)
        try:
            yield Target(url, running, shard)
        finally:
            await cleanup()
        return
    url = running.url + ROUTE
    # The service must mount the route: an unsigned POST is refused by the webhook handler
    # (401, signature missing), not by the router (404/405).
    async with http.post(url, data=b"{}") as resp:
        doc = await resp.json(content_type=None)
        assert resp.status == 401, f"{ROUTE} is not served by the API: {resp.status} {doc}"
    yield Target(url, running, shard)


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        url, data=body, headers={"Content-Type": "application/json", **headers}
    ) as resp:
        return resp.status, await resp.json(content_type=None)


async def ter_workflows(shard: Shard) -> list[WorkflowRecord]:
    return [w for w in await shard.store.list_workflows() if w.action == ACTION]


def body_for(alias: str, key: str = "tablet") -> bytes:
    return json.dumps({key: alias}).encode()


async def test_signed_webhook_runs_ter_after_manual_switch(
    target: Target, http: aiohttp.ClientSession
) -> None:
    shard = target.shard
    assert await shard.check_invariants() == "zone1-101"
    await manual_switch(shard, new="zone1-102", old="zone1-101")

    body = body_for("zone1-102")
    status, doc = await post(http, target.url, body, sign(SECRET, body))

    assert status == 200, doc
    assert doc["new_primary"] == "zone1-102"
    assert doc["old_primary"] == "zone1-101"
    assert doc["changed"] is True
    assert await shard.check_invariants() == "zone1-102"
    (wf,) = await ter_workflows(shard)
    assert wf.status.value == "succeeded"
    # No webhook URLs are configured: events are logged, nothing is queued in etcd.
    assert await shard.store.kv.get_prefix(f"{shard.store.root}/global/outbox/") == []


async def test_webhook_accepts_alias_key_and_maps_workflow_errors(
    target: Target, http: aiohttp.ClientSession
) -> None:
    shard = target.shard
    # zone1-103 still replicates: TER refuses it (precondition), changing nothing.
    body = body_for("zone1-103", key="alias")
    status, doc = await post(http, target.url, body, sign(SECRET, body))
    assert status == 409, doc
    assert "replicates" in str(doc["error"])
    body = body_for("zone1-999")
    status, doc = await post(http, target.url, body, sign(SECRET, body))
    assert status == 404, doc
    for bad in (b"not json", b"[]", b'{"tablet": 5}', b'{"tablet": "no-such-cell-x"}'):
        status, doc = await post(http, target.url, bad, sign(SECRET, bad))
        assert status == 400, (bad, doc)
    assert await shard.check_invariants() == "zone1-101"


async def test_unsigned_bad_stale_and_replayed_webhooks_are_refused_and_run_nothing(
    target: Target, http: aiohttp.ClientSession, service_factory: ServiceFactory
) -> None:
    shard = target.shard
    await manual_switch(shard, new="zone1-102", old="zone1-101")
    body = body_for("zone1-102")
    max_age = target.service.settings.webhook_max_age_s

    refused = {
        "missing": {},
        "wrong secret": sign("not-the-secret", body),
        "stale": sign(SECRET, body, now=time.time() - max_age - 5),
        "future": sign(SECRET, body, now=time.time() + max_age + 5),
        "other body": sign(SECRET, body_for("zone1-103")),
        "malformed": {**sign(SECRET, body), SIGNATURE_HEADER: "sha256=zz"},
    }
    for why, headers in refused.items():
        status, doc = await post(http, target.url, body, headers)
        assert status == 401, (why, doc)
    assert await shard.primary_alias() == "zone1-101", "a refused webhook changed topology"
    assert await ter_workflows(shard) == [], "a refused webhook ran a workflow"

    headers = sign(SECRET, body)
    status, doc = await post(http, target.url, body, headers)
    assert status == 200, doc
    assert await shard.primary_alias() == "zone1-102"

    # The same request again: refused by this instance, and by another one on the same etcd.
    status, doc = await post(http, target.url, body, headers)
    assert status == 409 and doc["error"]["details"]["reason"] == "replay", doc
    other = await service_factory(shard, webhook_secret=SECRET, recoveries_enabled=False)
    other_url, cleanup = await own_app(other.service)
    try:
        status, doc = await post(http, other_url, body, headers)
    finally:
        await cleanup()
    assert status == 409 and doc["error"]["details"]["reason"] == "replay", doc
    assert len(await ter_workflows(shard)) == 1, "a replay ran a workflow"


async def test_webhooks_are_refused_when_no_secret_is_configured(
    shard_factory: ShardFactory, service_factory: ServiceFactory, http: aiohttp.ClientSession
) -> None:
    shard = await shard_factory(tablets=2)
    running = await service_factory(shard, recoveries_enabled=False)
    url, cleanup = await own_app(running.service)
    body = body_for("zone1-102")
    try:
        for secret in ("", "anything"):
            status, doc = await post(http, url, body, sign(secret, body))
            assert status == 401, doc
    finally:
        await cleanup()
    assert await ter_workflows(shard) == []
