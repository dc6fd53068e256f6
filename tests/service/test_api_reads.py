"""Reads through the HTTP API of a running service over a real shard (etcd + MariaDB)."""

from __future__ import annotations

import asyncio
import json
import time

from tests.helpers.ports import refused_port
from tests.service import command, error_code, get


async def _wait_health(http, url: str, aliases: list[str], timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        status, body = await get(http, url, "/api/v1/health")
        assert status == 200
        if all((body["tablets"].get(a) or {}).get("healthy") for a in aliases):
            return body
        assert time.monotonic() < deadline, f"health snapshot incomplete: {body}"
        await asyncio.sleep(0.1)


async def test_topology_reads_show_keyspaces_shards_tablets_and_serving_graph(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=3)
    url = (await service_factory(shard)).url

    status, body = await get(http, url, "/api/v1/keyspaces")
    assert status == 200
    assert [k["name"] for k in body["keyspaces"]] == ["commerce"]

    status, body = await get(http, url, "/api/v1/keyspaces/commerce")
    assert status == 200
    assert body["name"] == "commerce" and body["shards"] == ["0"]
    assert body["durability_policy"] == "none" and body["revision"] > 0

    status, body = await get(http, url, "/api/v1/keyspaces/commerce/shards")
    assert [s["name"] for s in body["shards"]] == ["0"]

    status, body = await get(http, url, "/api/v1/keyspaces/commerce/shards/0")
    assert status == 200
    assert body["primary_alias"] == "zone1-101" and body["is_primary_serving"] is True
    assert [t["alias"] for t in body["tablets"]] == shard.aliases
    assert body["lock"] is None

    status, body = await get(http, url, "/api/v1/tablets")
    assert [t["alias"] for t in body["tablets"]] == shard.aliases
    status, body = await get(http, url, "/api/v1/tablets", type="replica", keyspace="commerce")
    assert [t["alias"] for t in body["tablets"]] == ["zone1-102", "zone1-103"]
    status, body = await get(http, url, "/api/v1/tablets", cell="zone2")
    assert status == 200 and body["tablets"] == []

    status, body = await get(http, url, "/api/v1/tablets/zone1-102")
    assert status == 200
    assert body["type"] == "replica" and body["cell"] == "zone1"
    assert body["mysql_port"] == shard.server("zone1-102").port

    status, body = await get(http, url, "/api/v1/serving/zone1/commerce")
    assert status == 200
    (s,) = body["shards"]
    assert s["primary"]["alias"] == "zone1-101" and s["primary_serving"] is True
    assert sorted(r["alias"] for r in s["replicas"]) == ["zone1-102", "zone1-103"]

    status, body = await get(http, url, "/api/v1/locks")
    assert status == 200 and body == {"locks": []}


async def test_workflow_journal_positions_and_health_reads(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=3)
    url = (await service_factory(shard)).url

    # The fixture's InitShardPrimary left a workflow record and a journal row.
    status, body = await get(http, url, "/api/v1/workflows")
    assert status == 200
    (wf,) = body["workflows"]
    assert wf["action"] == "InitShardPrimary" and wf["status"] == "succeeded"
    status, body = await get(http, url, f"/api/v1/workflows/{wf['id']}")
    assert status == 200
    steps = [s["name"] for s in body["steps"]]
    assert steps[0] == "lock_shard" and "read_shard" in steps
    assert body["result"]["new_primary"] == "zone1-101"
    status, body = await get(http, url, "/api/v1/workflows", status="failed")
    assert body["workflows"] == []

    status, body = await get(http, url, "/api/v1/keyspaces/commerce/shards/0/journal")
    assert status == 200
    assert body["primary"] == "zone1-101"
    assert body["entries"][0]["action_name"] == "InitShardPrimary"
    assert body["entries"][0]["primary_alias"] == "zone1-101"

    status, body = await get(http, url, "/api/v1/keyspaces/commerce/shards/0/replication-positions")
    assert status == 200
    by_alias = {t["alias"]: t for t in body["tablets"]}
    assert by_alias["zone1-101"]["replicating_from"] is None
    assert by_alias["zone1-102"]["io_running"] and by_alias["zone1-102"]["sql_running"]

    body = await _wait_health(http, url, shard.aliases)
    assert body["is_leader"] is True
    assert isinstance(body["recoveries"], list)
    assert body["tablets"]["zone1-101"]["read_only"] is False

    status, body = await get(http, url, "/healthz")
    assert status == 200 and body["status"] == "ok"
    status, body = await get(http, url, "/readyz")
    assert status == 200 and body["status"] == "ready"
    status, text = await get(http, url, "/metrics")
    assert status == 200
    for name in ("orc_leader 1.0", "orc_etcd_operation_duration_seconds_bucket",
                 "orc_http_requests_total", "orc_health_check_duration_seconds"):  # fmt: skip
        assert name in text, name


async def test_primary_and_replica_checks_answer_like_patroni(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await service_factory(shard, recoveries_enabled=False)
    url = rs.url
    await _wait_health(http, url, shard.aliases)

    status, body = await get(http, url, "/api/v1/tablets/zone1-101/primary")
    assert status == 200 and body["ok"] is True and body["source"] == "health_check"
    status, body = await get(http, url, "/api/v1/tablets/zone1-102/primary")
    assert status == 503 and body["ok"] is False
    assert "not the serving primary" in body["reason"]

    status, body = await get(http, url, "/api/v1/tablets/zone1-102/replica", max_lag="10")
    assert status == 200 and body["ok"] is True
    status, body = await get(http, url, "/api/v1/tablets/zone1-101/replica")
    assert status == 503 and "not replicating" in body["reason"]

    # Stopped replication: not a usable replica, whatever the lag limit.
    await shard.admin("zone1-103").execute("STOP SLAVE")
    try:
        rs.service.health.snapshot = lambda: {}  # type: ignore[method-assign]
        status, body = await get(http, url, "/api/v1/tablets/zone1-103/replica", max_lag="100")
        assert status == 503 and body["source"] == "probe", body
        assert body["reason"] in ("not replicating", "replication threads not running")
        # Without a health snapshot the primary check probes MySQL directly.
        status, body = await get(http, url, "/api/v1/tablets/zone1-101/primary")
        assert status == 200 and body["source"] == "probe"
    finally:
        await shard.admin("zone1-103").execute("START SLAVE")

    status, body = await get(http, url, "/api/v1/tablets/zone1-109/primary")
    assert status == 404 and error_code(body) == "NOT_FOUND"


async def test_read_errors_are_json_with_the_right_status(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=1)
    url = (await service_factory(shard)).url
    cases = [
        ("/api/v1/keyspaces/nosuch", 404, "NOT_FOUND"),
        ("/api/v1/keyspaces/nosuch/shards", 404, "NOT_FOUND"),
        ("/api/v1/keyspaces/commerce/shards/80-", 404, "NOT_FOUND"),
        ("/api/v1/keyspaces/commerce/shards/xyz", 400, "INVALID_ARGUMENT"),
        ("/api/v1/keyspaces/bad%20name", 400, "INVALID_ARGUMENT"),
        ("/api/v1/tablets/zone1-999", 404, "NOT_FOUND"),
        ("/api/v1/tablets/not_an_alias", 400, "INVALID_ARGUMENT"),
        ("/api/v1/tablets?type=master", 400, "INVALID_ARGUMENT"),
        ("/api/v1/tablets?cell=Bad-Cell", 400, "INVALID_ARGUMENT"),
        ("/api/v1/tablets/zone1-101/replica?max_lag=soon", 400, "INVALID_ARGUMENT"),
        ("/api/v1/serving/zone9/commerce", 404, "NOT_FOUND"),
        ("/api/v1/serving/zone1/nosuch/watch", 404, "NOT_FOUND"),
        ("/api/v1/workflows/nosuch-id", 404, "NOT_FOUND"),
        ("/api/v1/workflows?limit=0", 400, "INVALID_ARGUMENT"),
        ("/api/v1/keyspaces/commerce/shards/0/journal?limit=x", 400, "INVALID_ARGUMENT"),
        ("/api/v1/nowhere", 404, "NOT_FOUND"),
    ]
    for path, want_status, want_code in cases:
        status, body = await get(http, url, path)
        assert (status, error_code(body)) == (want_status, want_code), (path, body)
    async with http.delete(url + "/api/v1/keyspaces") as r:
        assert r.status == 405
        assert error_code(await r.json()) == "METHOD_NOT_ALLOWED"


async def test_serving_graph_watch_delivers_the_new_primary_after_prs(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=3)
    url = (await service_factory(shard)).url

    async with http.get(url + "/api/v1/serving/zone1/commerce/watch") as watch:
        assert watch.status == 200
        assert watch.content_type == "application/x-ndjson"
        first = json.loads(await watch.content.readline())
        assert first["shards"][0]["primary"]["alias"] == "zone1-101"

        status, result = await command(
            http, url, "PlannedReparentShard",
            {"keyspace_shard": "commerce/0", "new_primary": "zone1-102"},
        )  # fmt: skip
        assert status == 200, result

        seen = []
        async with asyncio.timeout(10):
            while True:
                graph = json.loads(await watch.content.readline())
                s = graph["shards"][0]
                seen.append((s["primary"]["alias"], s["primary_serving"]))
                if seen[-1] == ("zone1-102", True):
                    break
        # The old primary went out of service before the new one came in.
        assert ("zone1-101", False) in seen, seen
    assert await shard.check_invariants() == "zone1-102"


async def test_etcd_unavailable_is_503_for_reads_and_readyz(
    shard_factory, service_factory, http
) -> None:
    shard = await shard_factory(tablets=1)
    # An etcd endpoint where connections are refused (the port held by this test meanwhile).
    with refused_port() as port:
        url = (await service_factory(shard, etcd_endpoints=(f"127.0.0.1:{port}",))).url
        status, body = await get(http, url, "/healthz")
        assert status == 200
        status, body = await get(http, url, "/readyz")
        assert (status, error_code(body)) == (503, "UNAVAILABLE")
        status, body = await get(http, url, "/api/v1/keyspaces/commerce/shards/0")
        assert (status, error_code(body)) == (503, "UNAVAILABLE")
        status, body = await command(http, url, "GetShard", {"keyspace_shard": "commerce/0"})
        assert (status, error_code(body)) == (503, "UNAVAILABLE")
