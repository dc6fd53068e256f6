"""Credentials never reach etcd: after a run of the service that exercises every kind of record
it writes (workflows with their steps and results, the reparent journal's topology side, shard
locks, audit entries, recoveries and their records, outbox events still waiting for a receiver
that is down, webhook replay markers, the leader election), no key or value under the topology
root holds the MySQL passwords, the API token or the webhook secret, in any encoding a careless
write would use."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import aiohttp
import pytest

from orchestrator.health.analysis import ProblemKind
from orchestrator.signing import sign
from orchestrator.webhooks import ROUTE
from tests.fixtures_cluster import ShardFactory, Writer
from tests.fixtures_service import ServiceFactory
from tests.helpers.health import FAST, recoveries, wait_for
from tests.helpers.ports import refused_port
from tests.service import command
from tests.service.test_webhooks import manual_switch

pytestmark = pytest.mark.slow

TOKEN = "api-token-4f1d2c9e"
SECRET = "webhook-secret-8b7a6e5d"


def encodings(secret: str) -> Iterator[bytes]:
    raw = secret.encode()
    yield raw
    yield json.dumps(secret).encode()[1:-1]
    yield base64.b64encode(raw)
    yield raw.hex().encode()


async def test_no_credential_is_ever_written_to_etcd(
    shard_factory: ShardFactory, service_factory: ServiceFactory, http: aiohttp.ClientSession
) -> None:
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    s = shard.server("zone1-101")
    secrets = {
        "mysql admin password": s.admin_password,
        "mysql app password": s.app_password,
        "api token": TOKEN,
        "webhook secret": SECRET,
    }
    with refused_port() as port:  # a webhook receiver that is down: events stay in the outbox
        rs = await service_factory(
            shard, **FAST, api_token=TOKEN, webhook_secret=SECRET,
            webhook_urls=(f"http://127.0.0.1:{port}/hook",),
        )  # fmt: skip
        await wait_for(lambda: rs.service.election.is_leader, 10, "leadership")
        writer = Writer(shard)
        await writer.write(3)

        status, body = await command(
            http, rs.url, "PlannedReparentShard",
            {"keyspace_shard": "commerce/0", "new_primary": "zone1-102"}, token=TOKEN,
        )  # fmt: skip
        assert status == 200, body
        for name in ("StopReplication", "StartReplication", "ReparentTablet"):
            status, body = await command(http, rs.url, name, {"alias": "zone1-103"}, token=TOKEN)
            assert status == 200, (name, body)
        # A recovery with its own records (a replica made writable by hand).
        await shard.admin("zone1-103").set_read_only(False)
        await wait_for(lambda: recoveries(rs, ProblemKind.REPLICA_WRITABLE, "succeeded"), 10,
                       "SetReadOnly")  # fmt: skip
        # An external switch announced by a signed webhook (TER and its replay marker).
        await manual_switch(shard, new="zone1-103", old="zone1-102")
        hook = json.dumps({"tablet": "zone1-103"}).encode()
        async with http.post(rs.url + ROUTE, data=hook, headers=sign(SECRET, hook)) as resp:
            assert resp.status == 200, await resp.text()
        # An emergency reparent away from a live primary (fenced, then spare).
        status, body = await command(
            http, rs.url, "EmergencyReparentShard",
            {"keyspace_shard": "commerce/0", "new_primary": "zone1-101"}, token=TOKEN,
        )  # fmt: skip
        assert status == 200, body
        # A command refused for a wrong token.
        status, _ = await command(
            http, rs.url, "StartReplication", {"alias": "zone1-102"}, token="wrong-" + TOKEN
        )
        assert status == 401
        assert await shard.check_invariants() == "zone1-101"
        assert rs.service.events.depth() > 0, "no event waiting in the outbox to scan"

        kvs = await shard.store.kv.get_prefix(shard.store.root + "/")
        assert len(kvs) >= 15, f"only {len(kvs)} keys: the run wrote less than expected"
        leaks = [
            f"{what} in {kv.key}"
            for kv in kvs
            for what, secret in secrets.items()
            if any(enc in kv.key.encode() or enc in kv.value for enc in encodings(secret))
        ]
    print(f"scanned {len(kvs)} keys under {shard.store.root}: no credential")
    assert leaks == [], leaks
