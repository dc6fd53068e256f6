"""Recovery control (issue 11 items 6-8): pausing automatic recovery at runtime (globally, per
keyspace, per shard), maintenance windows that expire by themselves and that PRS honours, and
the recovery and workflow history from the CLI. Real MariaDB servers and etcd, the service
in-process, every command through the real CLI as a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from orchestrator.health.analysis import ProblemKind as K
from tests.fixtures_cluster import ShardFactory
from tests.fixtures_service import ServiceFactory
from tests.helpers.health import FAST, recoveries, start_service, wait_for
from tests.service.test_ctl import ctl
from topo.records import TabletType

pytestmark = pytest.mark.slow


async def get(url: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}{path}") as r:
        return r.status, await r.json()


async def test_recoveries_paused_and_resumed_globally_per_keyspace_and_per_shard(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    url = rs.url

    async def stop_replication_by_hand() -> None:  # not StopReplication: a repairable problem
        await shard.admin("zone1-102").execute("STOP SLAVE")

    async def stays_stopped() -> None:
        await asyncio.sleep(6 * FAST["health_interval_s"])
        status = await shard.admin("zone1-102").replication_status()
        assert status is not None and not status.io_running and not status.sql_running

    for scope, args, expect in (
        ("global", [], "automatic recovery is paused globally by"),
        ("keyspace", ["commerce"], "automatic recovery is off for keyspace commerce (paused by"),
        ("shard", ["commerce/0"], "automatic recovery is paused for shard commerce/0 by"),
    ):
        reason = f"drill: {scope} pause"
        r = await ctl(url, "SetRecoveries", "--disable", *args, "--reason", reason)
        assert r.code == 0, r.stderr
        assert r.json["recoveries"] == "paused"
        await stop_replication_by_hand()
        blocked = await wait_for(
            lambda reason=reason: [e for e in recoveries(rs, K.REPLICATION_STOPPED, "blocked")
                                   if e["category"] == "paused" and reason in e["reason"]],
            5, f"the restart to be blocked by the {scope} pause",
        )  # fmt: skip
        assert expect in blocked[0]["reason"], blocked[0]["reason"]
        await stays_stopped()
        # Shown in /api/v1/health, in GetShard, and as a gauge.
        _, doc = await get(url, "/api/v1/health")
        control = doc["recovery_control"]
        if scope == "global":
            assert control["global"]["reason"] == reason
        elif scope == "keyspace":
            assert control["keyspaces"]["commerce"]["reason"] == reason
            r = await ctl(url, "GetKeyspace", "commerce")
            assert r.json["auto_recovery"] is False  # the keyspace's own, stored switch
        else:
            assert control["shards"]["commerce/0"]["reason"] == reason
        r = await ctl(url, "GetShard", "commerce/0")
        assert r.json["recoveries"]["enabled"] is False
        assert r.json["recoveries"]["paused_scope"] == scope
        assert reason in r.json["recoveries"]["reason"]
        async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
            assert 'orc_recovery_paused{keyspace="commerce",shard="0"} 1.0' in await resp.text()

        r = await ctl(url, "SetRecoveries", "--enable", *args)
        assert r.code == 0, r.stderr
        await shard.wait_replicating("zone1-102", timeout=10)  # repaired once resumed
        r = await ctl(url, "GetShard", "commerce/0")
        assert r.json["recoveries"] == {"enabled": True, "paused_scope": None, "reason": None,
                                        "auto_recovery": True}  # fmt: skip
    _, doc = await get(url, "/api/v1/health")
    assert doc["recovery_control"]["global"] is None
    assert doc["recovery_control"]["keyspaces"] == {} and doc["recovery_control"]["shards"] == {}

    r = await ctl(url, "SetRecoveries", "--disable", "--enable")
    assert r.code == 1 and "exactly one of disable or enable" in r.stderr
    r = await ctl(url, "SetRecoveries", "--disable", "nosuch")
    assert r.code == 1 and "NOT_FOUND" in r.stderr


async def test_maintenance_window_blocks_recovery_lets_prs_through_and_expires(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    url = rs.url
    r = await ctl(url, "BeginMaintenance", "zone1-103", "--duration", "5s",
                  "--reason", "kernel upgrade")  # fmt: skip
    assert r.code == 0, r.stderr
    assert r.json["maintenance"]["active"] is True
    assert r.json["maintenance"]["reason"] == "kernel upgrade"
    began = time.monotonic()
    shard.server("zone1-103").kill()

    # Not recovered while the window is open: it stays a replica, the spare move is blocked.
    blocked = await wait_for(
        lambda: [e for e in recoveries(rs, K.UNHEALTHY_TABLET, "blocked")
                 if e["category"] == "maintenance"], 5, "the spare move to be blocked",
    )  # fmt: skip
    assert "under maintenance until" in blocked[0]["reason"]
    assert "kernel upgrade" in blocked[0]["reason"]
    problems = {p["kind"] for p in rs.service.health.problems()["commerce/0"]}
    assert K.TABLET_IN_MAINTENANCE.value in problems
    assert (await shard.tablet("zone1-103")).type == TabletType.REPLICA

    # A PRS does not wait for the tablet under maintenance.
    r = await ctl(url, "PlannedReparentShard", "commerce/0", "--new-primary", "zone1-102")
    assert r.code == 0, r.stderr
    assert await shard.primary_alias() == "zone1-102"
    assert time.monotonic() - began < 5, "the PRS must have run inside the window"
    assert (await shard.tablet("zone1-103")).type == TabletType.REPLICA

    # The window ends by itself: then the health checks act (the dead tablet becomes spare).
    await wait_for(
        lambda: _type_is(shard, "zone1-103", TabletType.SPARE), 10, "spare after the window"
    )
    assert time.monotonic() - began >= 5
    # And the ended window leaves no tag behind: the leader clears it.
    await wait_for(
        lambda: _maintenance_cleared(url, "zone1-103"), 10, "the ended window's tag cleared"
    )

    # Without a window, the PRS refuses and names both ways out.
    r = await ctl(url, "PlannedReparentShard", "commerce/0", "--new-primary", "zone1-101")
    assert r.code == 1
    (first,) = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert first.startswith("error: FAILED_PRECONDITION: every tablet must answer"), first
    assert ("name another primary-elect or put zone1-103 under maintenance "
            "(BeginMaintenance zone1-103 --duration 30m") in first  # fmt: skip
    assert await shard.primary_alias() == "zone1-102"

    # EndMaintenance ends a window at once.
    r = await ctl(url, "BeginMaintenance", "zone1-101", "--duration", "30m", "--reason", "x")
    assert r.code == 0 and r.json["maintenance"]["left_s"] > 1700, r.stderr
    r = await ctl(url, "EndMaintenance", "zone1-101")
    assert r.code == 0 and r.json["ended"] is True
    assert (await ctl(url, "GetTablet", "zone1-101")).json["maintenance"] is None


async def test_recovery_and_workflow_history_from_the_cli(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory, recovery_block_s=60)
    url = rs.url
    await shard.admin("zone1-103").execute("STOP SLAVE")
    await wait_for(lambda: recoveries(rs, K.REPLICATION_STOPPED, "succeeded"), 5, "a recovery")
    r = await ctl(url, "PlannedReparentShard", "commerce/0", "--new-primary", "zone1-102")
    assert r.code == 0, r.stderr
    prs1 = r.json["workflow_id"]
    r = await ctl(url, "PlannedReparentShard", "commerce/0", "--new-primary", "zone1-101")
    assert r.code == 0, r.stderr
    prs2 = r.json["workflow_id"]

    # GetRecoveries: what was detected, what ran, the result.
    r = await ctl(url, "GetRecoveries", "commerce/0", "--format", "json")
    assert r.code == 0, r.stderr
    (entry,) = [e for e in r.json["recoveries"] if e["problem"] == "ReplicationStopped"]
    assert entry["tablet"] == "zone1-103" and entry["action"] == "StartReplication"
    assert entry["result"] == "succeeded" and entry["detail"]
    assert r.json["shards"]["commerce/0"]["paused"] is None
    assert r.json["shards"]["commerce/0"]["failover_block_left_s"] is None
    r = await ctl(url, "GetRecoveries", "--result", "blocked", "--format", "json")
    assert r.code == 0 and r.json["recoveries"] == []
    # The anti-flapping window left after a failover (the leader's etcd record of it).
    await shard.store.kv.put(
        f"{shard.store.root}/global/recovery/commerce/0",
        json.dumps({"time": time.time(), "action": "EmergencyReparentShard",
                    "problem": "DeadPrimary", "result": "succeeded"}).encode(),
    )  # fmt: skip
    r = await ctl(url, "GetRecoveries", "commerce/0", "--format", "json")
    left = r.json["shards"]["commerce/0"]["failover_block_left_s"]
    assert 55 < left <= 60, left
    r = await ctl(url, "GetRecoveries", "--format", "table")
    assert r.code == 0, r.stderr
    assert "FAILOVER BLOCKED FOR" in r.stdout and "StartReplication" in r.stdout
    assert "ReplicationStopped" in r.stdout and "succeeded" in r.stdout

    # GetWorkflows and GET /api/v1/workflows: filters that work (and none silently ignored).
    status, body = await get(url, "/api/v1/workflows?action=PlannedReparentShard")
    assert status == 200
    assert [w["id"] for w in body["workflows"]] == [prs2, prs1]
    status, body = await get(url, "/api/v1/workflows?action=EmergencyReparentShard")
    assert status == 200 and body["workflows"] == []
    status, body = await get(url, "/api/v1/workflows?acton=PlannedReparentShard")
    assert status == 400 and "unknown query parameter(s) acton" in body["error"]["message"]
    r = await ctl(url, "GetWorkflows", "commerce/0", "--action", "InitShardPrimary",
                  "--format", "json")  # fmt: skip
    assert r.code == 0, r.stderr
    assert [w["action"] for w in r.json["workflows"]] == ["InitShardPrimary"]
    r = await ctl(url, "GetWorkflows", "--status", "succeeded", "--limit", "1", "--format", "json")
    assert [w["id"] for w in r.json["workflows"]] == [prs2]

    # Journal rows carry the workflow that wrote them.
    status, body = await get(url, "/api/v1/keyspaces/commerce/shards/0/journal")
    assert status == 200, body
    linked = {e["workflow_id"] for e in body["entries"]}
    assert {prs1, prs2} <= linked
    by_wf = {e["workflow_id"]: e for e in body["entries"]}
    assert by_wf[prs2]["primary_alias"] == "zone1-101"
    assert by_wf[prs1]["primary_alias"] == "zone1-102"


async def _maintenance_cleared(url: str, alias: str) -> bool:
    r = await ctl(url, "GetTablet", alias)
    assert r.code == 0, r.stderr
    return r.json["maintenance"] is None


async def _type_is(shard: Any, alias: str, want: TabletType) -> bool:
    return bool((await shard.tablet(alias)).type == want)
