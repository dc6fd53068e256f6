"""The recovery history is shared through etcd (`topo.recovery_log`): a recovery run (or
blocked) by one orchestrator instance is listed by every other one, through `GetRecoveries` and
`/api/v1/health`, and is still listed after the instance that ran it stopped and another leads.
Expired maintenance windows leave no tag behind: the leader clears them. Real MariaDB servers
and etcd, the services in-process, the CLI as a subprocess.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from orchestrator.health.analysis import ProblemKind as K
from orchestrator.health.ownership import owner_of
from tests.fixtures_cluster import Shard, ShardFactory
from tests.fixtures_service import RunningService, ServiceFactory
from tests.helpers.health import FAST, recoveries, start_service, wait_for
from tests.service.test_ctl import ctl
from workflows.common import MAINTENANCE_TAG

pytestmark = pytest.mark.slow


async def listed(rs: RunningService, *args: str) -> list[dict[str, Any]]:
    r = await ctl(rs.url, "GetRecoveries", *args, "--format", "json")
    assert r.code == 0, r.stderr
    assert r.json["recoveries_from"] == "etcd" and r.json["note"] is None, r.json
    return list(r.json["recoveries"])


async def health_recoveries(rs: RunningService) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{rs.url}/api/v1/health") as resp,
    ):
        assert resp.status == 200
        doc = await resp.json()
    assert doc["recoveries_from"] == "etcd"
    return list(doc["recoveries"])


async def test_a_recovery_run_by_one_instance_is_listed_by_another_also_after_it_stopped(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    # orc-a leads and, with the shards shared among instances, owns commerce/0 next to orc-d:
    # it is the one that recovers, either way.
    assert owner_of("commerce/0", ["orc-a", "orc-d"]) == "orc-a"
    a = await start_service(shard, service_factory, instance_id="orc-a")
    b = await service_factory(shard, **FAST, instance_id="orc-d")
    await wait_for(lambda: b.service.health.cycles >= 2, 5, "the follower's health checks")
    assert not b.service.election.is_leader

    # A blocked recovery (shard paused) and a recovery that ran, both on the leader, orc-a.
    r = await ctl(a.url, "SetRecoveries", "--disable", "commerce/0", "--reason", "drill")
    assert r.code == 0, r.stderr
    await shard.admin("zone1-103").execute("STOP SLAVE")
    (blocked,) = await wait_for(
        lambda: recoveries(a, K.REPLICATION_STOPPED, "blocked"), 5, "the blocked restart"
    )
    r = await ctl(a.url, "SetRecoveries", "--enable", "commerce/0")
    assert r.code == 0, r.stderr
    (ran,) = await wait_for(
        lambda: recoveries(a, K.REPLICATION_STOPPED, "succeeded"), 10, "the restart on orc-a"
    )
    assert ran["instance_id"] == "orc-a"

    # orc-d ran nothing itself, and lists both, as orc-a does.
    assert b.service.health.recoveries() == []
    on_a = [e["id"] for e in a.service.health.recoveries()]  # what orc-a holds in memory
    assert {blocked["id"], ran["id"]} <= set(on_a)
    on_b = {e["id"]: e for e in await listed(b, "commerce/0")}
    assert list(on_b) == on_a, on_b
    assert on_b[ran["id"]]["result"] == "succeeded"
    assert on_b[ran["id"]]["action"] == "StartReplication"
    assert on_b[ran["id"]]["tablet"] == "zone1-103" and on_b[ran["id"]]["detail"]
    assert on_b[ran["id"]]["instance_id"] == "orc-a"
    assert on_b[ran["id"]]["reason"] == ran["reason"] and on_b[ran["id"]]["duration_ms"] >= 0
    assert on_b[blocked["id"]]["result"] == "blocked"
    assert on_b[blocked["id"]]["category"] == "paused"
    assert "automatic recovery is paused for shard commerce/0" in on_b[blocked["id"]]["reason"]
    assert "drill" in on_b[blocked["id"]]["reason"]
    assert [e["id"] for e in await listed(b, "--result", "blocked")] == [blocked["id"]]
    assert [e["id"] for e in await listed(a)] == [e["id"] for e in await listed(b)]
    assert [e["id"] for e in await health_recoveries(b)] == on_a

    # orc-a stops; orc-d leads and still lists what orc-a ran, next to what it runs itself.
    await a.stop()
    await wait_for(lambda: b.service.election.is_leader, FAST["election_ttl_s"] + 3, "orc-d")
    after = {e["id"]: e for e in await listed(b)}
    assert after[ran["id"]]["result"] == "succeeded"
    assert after[ran["id"]]["instance_id"] == "orc-a"
    assert blocked["id"] in after
    await shard.admin("zone1-102").execute("STOP SLAVE")
    (own,) = await wait_for(
        lambda: recoveries(b, K.REPLICATION_STOPPED, "succeeded"), 10, "the restart on orc-d"
    )
    history = await listed(b)
    assert [e["id"] for e in history[:3]] == [own["id"], ran["id"], blocked["id"]]
    assert [e["instance_id"] for e in history[:2]] == ["orc-d", "orc-a"]
    assert [e["id"] for e in await health_recoveries(b)][:3] == [e["id"] for e in history[:3]]

    # A new instance, started after all this, lists the same history.
    c = await service_factory(shard, **FAST, instance_id="orc-c")
    assert [e["id"] for e in await listed(c)] == [e["id"] for e in history]


async def _tags(shard: Shard, alias: str) -> dict[str, str]:
    return dict((await shard.tablet(alias)).tags)


async def test_the_leader_clears_the_tag_of_an_expired_maintenance_window(
    shard_factory: ShardFactory, service_factory: ServiceFactory
) -> None:
    shard = await shard_factory(tablets=3)
    rs = await start_service(shard, service_factory)
    began = time.time()  # before the command: the window starts when the service runs it
    r = await ctl(rs.url, "BeginMaintenance", "zone1-103", "--duration", "2s",
                  "--reason", "kernel upgrade")  # fmt: skip
    assert r.code == 0, r.stderr
    r = await ctl(rs.url, "BeginMaintenance", "zone1-102", "--duration", "30m", "--reason", "x")
    assert r.code == 0, r.stderr
    assert MAINTENANCE_TAG in await _tags(shard, "zone1-103")

    await wait_for(
        lambda: _untagged(shard, "zone1-103"), 10, "the expired window's tag to be cleared"
    )
    assert time.time() - began >= 2, "cleared before the window ended"
    r = await ctl(rs.url, "GetTablet", "zone1-103")
    assert r.code == 0 and r.json["maintenance"] is None, r.json
    # The open window is kept, and so are the tablet's other fields.
    assert MAINTENANCE_TAG in await _tags(shard, "zone1-102")
    r = await ctl(rs.url, "GetTablet", "zone1-102")
    assert r.json["maintenance"]["active"] is True
    assert (await shard.tablet("zone1-103")).type.value == "replica"


async def _untagged(shard: Shard, alias: str) -> bool:
    return MAINTENANCE_TAG not in await _tags(shard, alias)
