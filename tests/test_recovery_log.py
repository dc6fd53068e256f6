"""The recovery log in etcd (`topo.recovery_log`) against a real etcd: records carry their
revision, creation is create-if-absent, updates are compare-and-swap (a concurrent writer costs
a retry, never a lost update), the log is bounded by count and by age, and records a dead
leader left `running` are marked interrupted."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from topo.errors import BadVersionError, NodeExistsError, NoNodeError
from topo.recovery_log import RecoveryLog, RecoveryRecord, new_recovery_id
from topo.store import TopoStore


def record(started: float, result: str = "succeeded", instance: str = "orc-a") -> RecoveryRecord:
    return RecoveryRecord(
        id=new_recovery_id(started), time=started, keyspace="commerce", shard="0",
        problem="ReplicationStopped", tablet="zone1-103", action="StartReplication",
        result=result, instance_id=instance,
        reason="" if result == "running" else "zone1-103: replication started",
        updated_at=started,
    )  # fmt: skip


async def test_records_carry_revisions_create_is_if_absent_and_updates_never_lose_one(
    topo: TopoStore,
) -> None:
    rlog = RecoveryLog(topo.kv, topo.root)
    rec = await rlog.create(record(time.time(), result="running"))
    assert rec.revision > 0
    with pytest.raises(NodeExistsError):
        await rlog.create(rec)
    read = await rlog.get(rec.id)
    assert read == rec and read.revision == rec.revision

    # A write with a stale revision is refused, not applied over the newer one.
    newer = await rlog.update_fields(rec.id, lambda r: dataclasses.replace(r, count=2))
    with pytest.raises(BadVersionError):
        await topo.kv.update(rlog.key(rec.id), rec.to_json(), rec.revision)

    # Concurrent read-modify-write loops: every increment lands.
    async def bump() -> None:
        await rlog.update_fields(rec.id, lambda r: dataclasses.replace(r, count=r.count + 1))

    await asyncio.gather(*(bump() for _ in range(8)))
    final = await rlog.get(rec.id)
    assert final.count == newer.count + 8
    assert final.to_entry()["count"] == final.count and "version" not in final.to_entry()
    with pytest.raises(NoNodeError):
        await rlog.update_fields(new_recovery_id(), lambda r: r)


async def test_log_lists_newest_first_and_is_pruned_by_count_and_age(topo: TopoStore) -> None:
    rlog = RecoveryLog(topo.kv, topo.root)
    now = time.time()
    old = await rlog.create(record(now - 8 * 24 * 3600))  # past the 7 days
    recent = [await rlog.create(record(now - 100 + i)) for i in range(6)]
    listed = await rlog.list_records()
    assert [r.id for r in listed] == [r.id for r in reversed(recent)] + [old.id]

    assert await rlog.prune(keep=4, now=now) == 3  # the 8-day-old one and the two oldest
    assert [r.id for r in await rlog.list_records()] == [r.id for r in reversed(recent[2:])]

    # A record updated after the prune read it survives that prune (compare-and-swap delete).
    stale = recent[2]
    await rlog.update_fields(stale.id, lambda r: dataclasses.replace(r, count=5))
    with pytest.raises(BadVersionError):
        await topo.kv.delete(rlog.key(stale.id), stale.revision)
    assert (await rlog.get(stale.id)).count == 5


async def test_records_left_running_by_another_instance_are_marked_interrupted(
    topo: TopoStore,
) -> None:
    rlog = RecoveryLog(topo.kv, topo.root)
    now = time.time()
    dead = await rlog.create(record(now - 900, result="running", instance="orc-dead"))
    young = await rlog.create(record(now - 5, result="running", instance="orc-dead"))
    mine = await rlog.create(record(now - 900, result="running", instance="orc-me"))
    marked = await rlog.mark_interrupted(older_than_s=600, except_instance="orc-me", now=now)
    assert marked == [dead.id]
    got = await rlog.get(dead.id)
    assert got.result == "interrupted" and "orc-dead stopped before" in got.reason, got
    assert (await rlog.get(young.id)).result == "running"
    assert (await rlog.get(mine.id)).result == "running"
