"""Shards shared among orchestrator instances (`orchestrator.health.ownership`): with three
instances each shard is checked by exactly one of them (the rendezvous owner), one that joins
takes its share without a gap in checking, `/api/v1/health` on any instance shows the whole
fleet; and when the owner of a shard is SIGKILLed while that shard's primary dies, a survivor
takes the shard over within the lease TTL plus a cycle and fails it over, once.

Real etcd and MariaDB (one mysqld per tablet), services in-process, the killed one a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from migration.members import MemberStore
from orchestrator import views
from orchestrator.health.analysis import ProblemKind
from orchestrator.health.ownership import owner_of
from tests.fixtures_cluster import Shard, ShardsFactory
from tests.fixtures_service import RunningService, ServiceFactory
from tests.helpers.health import FAST, recoveries, wait_for
from tests.service.test_ha import _serve_in_subprocess
from topo.recovery_log import RecoveryLog

pytestmark = pytest.mark.slow

TTL_S = FAST["election_ttl_s"]
INTERVAL_S = FAST["health_interval_s"]
# How long an instance keeps checking a shard it lost (`HealthChecker`: 2 cycles, >= the TTL).
HANDOVER_S = max(2 * INTERVAL_S + FAST["health_timeout_s"], TTL_S)


def key(shard: Shard) -> str:
    return f"{shard.keyspace}/{shard.shard}"


def owning(shards: list[str], others: list[str], prefix: str) -> str:
    """An instance name that, next to `others`, owns at least one of `shards` (names hash
    deterministically, so this is the same on every run)."""
    return next(
        n for n in (f"{prefix}{i}" for i in range(1000))
        if any(owner_of(s, [n, *others]) == n for s in shards)
    )  # fmt: skip


async def get_json(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as r:
        assert r.status == 200, await r.text()
        return dict(await r.json())


async def test_three_instances_check_each_shard_once_and_a_join_leaves_no_gap(
    shards_factory: ShardsFactory, service_factory: ServiceFactory
) -> None:
    shards = await shards_factory(shards=4, tablets=2)
    keys = [key(s) for s in shards]
    aliases = {a for s in shards for a in s.aliases}
    first = ["orc-a", "orc-b"]
    joiner = owning(keys, first, "orc-c")
    ids = [*first, joiner]
    rss: dict[str, RunningService] = {}
    for name in first:
        rss[name] = await service_factory(shards[0], **FAST, instance_id=name)
    await wait_for(lambda: all(rs.service.health.ownership.live == set(first)
                               for rs in rss.values()), 10, "two live instances")  # fmt: skip
    assert rss["orc-a"].service.health.ownership.handover_s == HANDOVER_S
    await wait_for(lambda: all(k in rss[owner_of(k, first)].service.health.checking_since
                               for k in keys), 10, "every shard checked")  # fmt: skip

    # The join: the shards the joiner takes were checked by their old owner until after the
    # joiner's own first check of them (an overlap, so no gap), and not recovered twice.
    moving = [k for k in keys if owner_of(k, ids) == joiner]
    assert moving
    rss[joiner] = await service_factory(shards[0], **FAST, instance_id=joiner)
    await wait_for(lambda: all(rs.service.health.ownership.live == set(ids)
                               for rs in rss.values()), 10, "three live instances")  # fmt: skip
    await wait_for(lambda: all(k in rss[joiner].service.health.checking_since for k in moving),
                   10, "the joiner to check its share")  # fmt: skip
    await asyncio.sleep(HANDOVER_S + 2 * INTERVAL_S)  # every handover has ended
    for k in moving:
        old = rss[owner_of(k, first)].service.health
        began = rss[joiner].service.health.checking_since[k]
        print(
            f"\njoin of {joiner}: {k} checked by {old.service.settings.instance_id} until "
            f"{(old.last_checked_at[k] - began) * 1000:+.0f} ms after {joiner}'s first check"
        )
        assert k not in old.checking_since  # handed over
        assert old.last_checked_at[k] >= began, "a gap in checking"

    # Exactly one instance checks each shard: each instance's own count of checks per shard.
    before = {n: dict(rs.service.health.shard_checks) for n, rs in rss.items()}
    await asyncio.sleep(10 * INTERVAL_S)
    for k in keys:
        checkers = [n for n, rs in rss.items()
                    if rs.service.health.shard_checks.get(k, 0) > before[n].get(k, 0)]  # fmt: skip
        assert checkers == [owner_of(k, ids)], (k, checkers)
    for n, rs in rss.items():
        h = rs.service.health
        assert h.owned == sorted(k for k in keys if owner_of(k, ids) == n)
        assert {f"{t['keyspace']}/{t['shard']}" for t in h.snapshot().values()} == set(h.owned)

    # /api/v1/health on any instance: every tablet of the fleet, each from its shard's owner.
    for n, rs in rss.items():
        doc = await get_json(f"{rs.url}/api/v1/health")
        assert set(doc["tablets"]) == aliases, n
        for t in doc["tablets"].values():
            assert t["healthy"], t
            assert t["checked_by"] == owner_of(f"{t['keyspace']}/{t['shard']}", ids)
        fleet = doc["fleet"]
        assert fleet["scope"] == "fleet" and fleet["unchecked_shards"] == []
        assert sorted(fleet["instances"]) == sorted(ids)
        assert all(i["answered"] for i in fleet["instances"].values())
        assert set(doc["problems"]) == set(keys)
        listed = (await views.tablets_with_health(rs.service))["tablets"]  # GetTablets
        assert {t["alias"] for t in listed if t["healthy"]} == aliases, n
        local = await get_json(f"{rs.url}/api/v1/health?local=true")
        assert local["scope"] == "instance" and local["owned_shards"] == rs.service.health.owned
    assert all(recoveries(rs, ProblemKind.DEAD_PRIMARY) == [] for rs in rss.values())


async def test_sigkill_of_a_shards_owner_while_its_primary_dies_fails_over_once(
    shards_factory: ShardsFactory, service_factory: ServiceFactory, tmp_path: Path
) -> None:
    shards = await shards_factory(shards=2, tablets=2)
    target = shards[0]
    k = key(target)
    survivors = ["orc-a", "orc-b"]
    victim = owning([k], survivors, "orc-p")
    assert owner_of(k, [victim, *survivors]) == victim
    heir_id = owner_of(k, survivors)
    log_path = tmp_path / "victim.log"
    proc = _serve_in_subprocess(target, victim, log_path)
    try:
        rss = {n: await service_factory(target, **FAST, instance_id=n) for n in survivors}
        ids = {victim, *survivors}
        await wait_for(lambda: all(rs.service.health.ownership.live == ids
                                   for rs in rss.values()), 20, "three live instances")  # fmt: skip
        members = MemberStore(target.store.kv, target.store.root)
        (addr,) = [m.address for m in await members.list_masters() if m.name == victim]

        async def victim_checks() -> bool:
            doc = await get_json(f"http://{addr}/api/v1/health?local=true")
            return k in doc["owned_shards"] and bool(doc["tablets"])

        await wait_for(victim_checks, 20, f"{victim} to check {k}")
        await asyncio.sleep(HANDOVER_S + 2 * INTERVAL_S)
        heir = rss[heir_id].service.health
        assert k not in heir.checking_since  # only the victim checks the shard
        primary = await target.primary_alias()
        assert primary is not None

        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.time()
        target.server(primary).kill()
        proc.wait(timeout=5)

        await wait_for(lambda: k in heir.checking_since, TTL_S + 5, f"{heir_id} to take {k}")
        takeover_s = heir.checking_since[k] - killed_at
        print(f"\ntakeover of {k} after SIGKILL of its owner {victim}: {takeover_s * 1000:.0f} ms "
              f"(lease TTL {TTL_S} s, check interval {INTERVAL_S} s)")  # fmt: skip
        # etcd expires leases on a ~500 ms tick; then the watch, a cycle at once.
        assert takeover_s < TTL_S + INTERVAL_S + 1.0

        (done,) = await wait_for(
            lambda: recoveries(rss[heir_id], ProblemKind.DEAD_PRIMARY, "succeeded"), 15,
            f"{heir_id}'s failover of {k}",
        )  # fmt: skip
        print(
            f"failover of {k} done {done['time'] + done['duration_ms'] / 1000 - killed_at:.1f} "
            "s after the kill"
        )
        new_primary = await target.check_invariants()
        assert new_primary != primary
        await asyncio.sleep(3.0)  # a second failover, if any, would have started by now

        ers = [w for w in await target.store.list_workflows()
               if w.action == "EmergencyReparentShard" and w.shard == target.shard]  # fmt: skip
        assert len(ers) == 1, [(w.id, w.instance_id, w.status) for w in ers]
        assert ers[0].instance_id == heir_id
        log = RecoveryLog(target.store.kv, target.store.root)
        ran = [r.to_entry() for r in await log.list_records()]
        ran = [e for e in ran if e["shard"] == target.shard and e["problem"] == "DeadPrimary"]
        assert [(e["instance_id"], e["result"]) for e in ran] == [(heir_id, "succeeded")]
        other = next(n for n in survivors if n != heir_id)
        assert recoveries(rss[other], ProblemKind.DEAD_PRIMARY) == []
        assert await target.primary_alias() == new_primary
    except BaseException:
        print(log_path.read_text()[-5000:])
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
