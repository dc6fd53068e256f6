"""Workers that die, stall or come back: subtasks move to a live worker within the lease TTL
plus a moment, and a worker that lost its binding can never write to the target again."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from migration.checkpoint import CheckpointTable
from migration.errors import FencedError
from mysqlctl.errors import MysqlUnreachableError
from tests.fixtures_cluster import eventually
from tests.migration.conftest import (
    PARTS,
    TARGET,
    MigrationCluster,
    ShardWriter,
    merge_task,
    seed,
    wait_target_equals,
)

LEASE_TTL = 3


async def _status(mc: MigrationCluster, source: str) -> dict:
    st = await mc.ops().query_status("merge-orders")
    return next(e for e in st["sources"] if e["sourceStatus"]["source"] == source)


async def _syncing(mc: MigrationCluster, source: str, worker: str | None = None) -> bool:
    e = await _status(mc, source)
    sub = e["subTaskStatus"][0]
    return (
        sub["unit"] == "Sync"
        and sub["stage"] == "Running"
        and (worker is None or e["sourceStatus"]["worker"] == worker)
    )


@pytest.mark.slow
async def test_killed_worker_subtask_resumes_on_another_within_lease_ttl(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    ids = await seed(mc, 300)
    writers = [ShardWriter(mc, sh, db, t, first_id=ids[sh][-1] + 1) for sh, db, t in PARTS]
    for w in writers:
        w.start(ids[w.shard])
    mc.start_scheduler()
    procs = {n: mc.start_worker_process(n, lease_ttl=LEASE_TTL) for n in ("w1", "w2")}

    async def both_registered() -> bool:  # so that the scheduler spreads the subtasks
        return len(await mc.mstore.list_workers()) == 2

    await eventually(both_registered, 20, "both workers to register")
    await mc.ops().start(merge_task(mc))
    source = f"{mc.keyspace}/-80"
    try:
        for s in (source, f"{mc.keyspace}/80-"):
            await eventually(lambda s=s: _syncing(mc, s), 30, f"{s} to sync")
    except AssertionError as e:
        raise AssertionError(f"{e}\nw1: {mc.worker_log('w1')[-2000:]}\nw2: "
                             f"{mc.worker_log('w2')[-2000:]}") from None  # fmt: skip
    before = await _status(mc, source)
    holder = before["sourceStatus"]["worker"]
    other = "w2" if holder == "w1" else "w1"
    killed_at = time.monotonic()
    procs[holder].kill()

    async def resumed() -> bool:
        e = await _status(mc, source)
        sub = e["subTaskStatus"][0]
        return (
            e["sourceStatus"]["worker"] == other
            and e["sourceStatus"]["epoch"] > before["sourceStatus"]["epoch"]
            and sub["unit"] == "Sync"
            and sub["sync"].get("rowsApplied", 0) > 0
        )

    await eventually(resumed, LEASE_TTL + 10, f"{source} to resume on {other}")
    took = time.monotonic() - killed_at
    assert took <= LEASE_TTL + 2, f"resumed {took:.2f}s after the kill (lease TTL {LEASE_TTL}s)"
    for w in writers:
        await w.wait_acked(50)
        await w.stop()
    await wait_target_equals(mc, PARTS, TARGET)


async def test_a_stale_epoch_cannot_commit_after_another_claimed_the_checkpoint(
    mcluster: MigrationCluster,
) -> None:
    """The fence itself, on the real target: epoch 1 (a worker that was partitioned, paused or
    slow) is in the middle of a transaction when epoch 2 (its successor) claims the
    checkpoint. The successor is not stalled by the old transaction's row lock: it kills the
    old owner's connection (the transaction rolls back), and the old epoch can never commit
    again, on that connection or on a new one."""
    mc = mcluster
    table = CheckpointTable("dm_meta", "fence-test")
    async with await mc.target_session() as old, await mc.target_session() as new:
        await table.ensure(old)
        await old.execute("CREATE TABLE IF NOT EXISTS dm_meta.fenced_rows (id INT PRIMARY KEY)")
        cp1 = await table.claim(old, "commerce/-80", 1)
        await old.begin()
        cp1 = await table.fence(old, cp1, gtid="0-101-5")
        await old.commit()
        # The old owner's next transaction is under way (its fence holds the row lock)...
        await old.begin()
        await table.fence(old, cp1, gtid="0-101-7")
        await old.execute("INSERT INTO dm_meta.fenced_rows VALUES (7)")
        # ...when its successor claims: at once, not after innodb_lock_wait_timeout.
        cp2 = await asyncio.wait_for(table.claim(new, "commerce/-80", 2), 5)
        assert cp2.gtid == "0-101-5"  # where the old owner last committed
        with pytest.raises(MysqlUnreachableError):
            await old.commit()
        async with await mc.target_session() as again:  # the old epoch reconnects
            await again.begin()
            with pytest.raises(FencedError, match="another worker owns this subtask"):
                await table.fence(again, cp1, gtid="0-101-9")
            await again.rollback()
            # A claim by the old epoch is refused too (it cannot take the subtask back).
            with pytest.raises(FencedError, match="epoch 2 owns the checkpoint"):
                await table.claim(again, "commerce/-80", 1)
        rows = await new.fetch_rows(
            "SELECT epoch, gtid FROM dm_meta.`fence-test_syncer_checkpoint` "
            "WHERE source_id = 'commerce/-80'"
        )
        assert [(int(e), str(g)) for e, g in rows] == [(2, "0-101-5")]
        assert await new.fetch_rows("SELECT id FROM dm_meta.fenced_rows") == []


@pytest.mark.slow
async def test_stalled_worker_loses_its_subtasks_and_says_so(mcluster: MigrationCluster) -> None:
    """SIGSTOP the only worker (a process paused, or a host cut off) past its lease: the
    subtasks move to a new worker; when the old one wakes up it stops and says why, and the
    target still equals the sources."""
    mc = mcluster
    ids = await seed(mc, 300)
    writers = [ShardWriter(mc, sh, db, t, first_id=ids[sh][-1] + 1) for sh, db, t in PARTS]
    for w in writers:
        w.start(ids[w.shard])
    mc.start_scheduler()
    stalled = mc.start_worker_process("w1", lease_ttl=LEASE_TTL)
    await mc.ops().start(merge_task(mc))
    for s in (f"{mc.keyspace}/-80", f"{mc.keyspace}/80-"):
        await eventually(lambda s=s: _syncing(mc, s, "w1"), 30, f"{s} to sync on w1")
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        mc.start_worker_process("w2", lease_ttl=LEASE_TTL)
        for s in (f"{mc.keyspace}/-80", f"{mc.keyspace}/80-"):
            await eventually(lambda s=s: _syncing(mc, s, "w2"), LEASE_TTL + 15, f"{s} on w2")
    finally:
        os.kill(stalled.pid, signal.SIGCONT)

    async def said_so() -> bool:
        log = mc.worker_log("w1")
        return "lease lost" in log or "fenced" in log

    await eventually(said_so, 10, "the stalled worker to say it lost its subtasks")
    for w in writers:
        await w.wait_acked(50)
        await w.stop()
    await wait_target_equals(mc, PARTS, TARGET)
    status = await mc.ops().query_status("merge-orders")
    assert {e["sourceStatus"]["worker"] for e in status["sources"]} == {"w2"}
