"""The seed's cautions as guarantees (issue 10 item 4). DM's manual says: do not restart a
worker during a sharding DDL sync, and the master forgets its locks. Here, with steady writers
on every upstream table and a merge task running, a worker is restarted (SIGTERM and SIGKILL)
during the full load, during sync and while a sharding DDL lock waits, and the leader is
restarted while a lock waits. Every case converges by itself: the target equals the union of
the sources row by row, no DDL lock is left for a person, and the shards' primaries are the
ones they were (nothing failed over on the MySQL side)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any

import pytest

from migration.members import MemberStore
from tests.fixtures_cluster import eventually
from tests.migration.conftest import (
    PARTS,
    TARGET,
    MigrationCluster,
    ShardWriter,
    create_shard_table,
    insert_rows,
    merge_task,
    start_service_process,
    wait_target_equals,
)
from tests.migration.test_ddl_locks import PARTS as PARTS4
from tests.migration.test_ddl_locks import TABLES, alter, columns, seed4, task4, wait_lock

SIGNALS = [pytest.param(signal.SIGTERM, id="sigterm"), pytest.param(signal.SIGKILL, id="sigkill")]


async def _primaries(mc: MigrationCluster) -> dict[str, str]:
    return {sh: await mc.primary_alias(sh) for sh in ("-80", "80-")}


async def _source_status(mc: MigrationCluster, task: str, source: str) -> dict[str, Any]:
    st = await mc.ops().query_status(task)
    return next(e for e in st["sources"] if e["sourceStatus"]["source"] == source)


async def _syncing(mc: MigrationCluster, task: str) -> bool:
    st = await mc.ops().query_status(task)
    subs = [e["subTaskStatus"][0] for e in st["sources"]]
    return len(subs) == 2 and all(s["unit"] == "Sync" and s["stage"] == "Running" for s in subs)


def _writers(mc: MigrationCluster, tables: list[tuple[str, str, str, int]]) -> list[ShardWriter]:
    """One steady writer per upstream table, above the ids the table was seeded with."""
    out = []
    for shard, db, table, first in tables:
        w = ShardWriter(mc, shard, db, table, first_id=first + 100_000)
        w.start()
        out.append(w)
    return out


async def _workers(mc: MigrationCluster) -> dict[str, subprocess.Popen[bytes]]:
    procs = {n: mc.start_worker_process(n) for n in ("w1", "w2")}

    async def registered() -> bool:
        return len(await mc.mstore.list_workers()) == 2

    await eventually(registered, 20, "both workers to register")
    return procs


async def _restart(
    mc: MigrationCluster, procs: dict[str, subprocess.Popen[bytes]], name: str, sig: int
) -> None:
    """Signal the worker, wait for it to exit, start it again under the same name."""
    procs[name].send_signal(sig)
    rc = await asyncio.wait_for(asyncio.to_thread(procs[name].wait), 10)
    assert rc == (0 if sig == signal.SIGTERM else -9), mc.worker_log(name)[-3000:]
    procs[name] = mc.start_worker_process(name)


async def _converges(
    mc: MigrationCluster,
    writers: list[ShardWriter],
    parts: list[tuple[str, str, str]],
    primaries: dict[str, str],
    task: str,
) -> None:
    for w in writers:
        await w.wait_acked(30)
    for w in writers:
        await w.stop()
    await wait_target_equals(mc, parts, TARGET, timeout=60)

    async def no_lock() -> bool:
        return (await mc.ops().show_ddl_locks(task, []))["locks"] == []

    await eventually(no_lock, 20, "no DDL lock left")
    assert await _primaries(mc) == primaries


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
async def test_worker_restarted_during_the_full_load_converges(
    mcluster: MigrationCluster, sig: int
) -> None:
    mc = mcluster
    primaries = await _primaries(mc)
    tables = [(sh, db, t, 1 + n * 10_000_000) for n, (sh, db, t) in enumerate(PARTS)]
    for shard, db, table, first in tables:  # enough rows for a load of a few seconds
        async with await mc.primary_session(shard) as s:
            await create_shard_table(s, db, table)
            for k in range(first, first + 30_000, 1000):
                await insert_rows(s, db, table, range(k, k + 1000))
    writers = _writers(mc, tables)
    mc.start_scheduler()
    procs = await _workers(mc)
    spec = merge_task(mc).replace("loader: {chunk-rows: 200}", "loader: {chunk-rows: 50}")
    await mc.ops().start(spec)
    source = f"{mc.keyspace}/-80"
    seen: dict[str, Any] = {}

    async def loading() -> bool:
        e = await _source_status(mc, "merge-orders", source)
        sub, seen["worker"] = e["subTaskStatus"][0], e["sourceStatus"]["worker"]
        rows = sub.get("load", {}).get("rows", 0)
        seen["rows"] = rows
        return sub["unit"] == "Load" and 500 <= rows <= 20_000

    await eventually(loading, 20, f"{source} to be loading", every=0.05)
    print(f"\nrestarting {seen['worker']} at {seen['rows']} of 30000 rows loaded")
    await _restart(mc, procs, seen["worker"], sig)
    if sig == signal.SIGTERM:  # drained at a chunk boundary, not cancelled past the bound
        log = mc.worker_log(seen["worker"])
        assert "subtask stopped at a batch boundary" in log, log[-3000:]
        assert "cancelled past the bound" not in log, log[-3000:]
    await eventually(lambda: _syncing(mc, "merge-orders"), 30, "both sources to sync")
    await _converges(mc, writers, PARTS, primaries, "merge-orders")


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
async def test_worker_restarted_during_sync_converges(mcluster: MigrationCluster, sig: int) -> None:
    mc = mcluster
    primaries = await _primaries(mc)
    tables = [(sh, db, t, 1 + n * 10_000_000) for n, (sh, db, t) in enumerate(PARTS)]
    for shard, db, table, first in tables:
        async with await mc.primary_session(shard) as s:
            await create_shard_table(s, db, table)
            await insert_rows(s, db, table, range(first, first + 300))
    writers = _writers(mc, tables)
    mc.start_scheduler()
    procs = await _workers(mc)
    await mc.ops().start(merge_task(mc))
    await eventually(lambda: _syncing(mc, "merge-orders"), 30, "both sources to sync")
    for w in writers:
        await w.wait_acked(30)
    holder = (await _source_status(mc, "merge-orders", f"{mc.keyspace}/-80"))["sourceStatus"]
    await _restart(mc, procs, holder["worker"], sig)
    await eventually(lambda: _syncing(mc, "merge-orders"), 30, "both sources to sync again")
    await _converges(mc, writers, PARTS, primaries, "merge-orders")


async def _lock_waiting(mc: MigrationCluster) -> list[ShardWriter]:
    """The 2 x 2 merge under writers, both sources syncing, then the ALTER on both tables of
    -80: the lock waits for 80-."""
    ks = mc.keyspace
    await seed4(mc)
    writers = _writers(mc, TABLES)
    await mc.ops().start(task4(mc))
    await eventually(lambda: _syncing(mc, "merge4"), 30, "both sources to sync")
    for shard, db, table, _first in TABLES[:2]:
        await alter(mc, shard, db, table, "ADD COLUMN c2 INT")
    await wait_lock(mc, [f"{ks}/-80"], [f"{ks}/80-"])
    return writers


async def _finish_lock(mc: MigrationCluster) -> None:
    for shard, db, table, _first in TABLES[2:]:
        await alter(mc, shard, db, table, "ADD COLUMN c2 INT")


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
async def test_worker_restarted_while_a_ddl_lock_waits_converges(
    mcluster: MigrationCluster, sig: int
) -> None:
    mc = mcluster
    primaries = await _primaries(mc)
    mc.start_scheduler()
    procs = await _workers(mc)
    writers = await _lock_waiting(mc)
    owner = (await _source_status(mc, "merge4", f"{mc.keyspace}/-80"))["sourceStatus"]["worker"]
    await _restart(mc, procs, owner, sig)
    await _finish_lock(mc)
    await _converges(mc, writers, PARTS4, primaries, "merge4")
    assert (await columns(mc)).count("c2") == 1


@pytest.mark.slow
@pytest.mark.parametrize("sig", SIGNALS)
async def test_leader_restarted_while_a_ddl_lock_waits_converges(
    mcluster: MigrationCluster, sig: int
) -> None:
    """The keeper runs in the leader: it is restarted while the lock waits, a follower leads
    and takes over the lock from etcd, the restarted one serves on."""
    mc = mcluster
    primaries = await _primaries(mc)
    a = await start_service_process(mc, "orc-a")
    await _workers(mc)

    async def a_leads() -> bool:
        return await MemberStore(mc.store.kv, mc.store.root).leader() == "orc-a"

    await eventually(a_leads, 15, "orc-a to lead")
    b = await start_service_process(mc, "orc-b")
    writers = await _lock_waiting(mc)
    a.proc.send_signal(sig)
    rc = await asyncio.wait_for(asyncio.to_thread(a.proc.wait), 10)
    assert rc == (0 if sig == signal.SIGTERM else -9), a.log_text()[-3000:]
    a = await start_service_process(mc, "orc-a")
    await _finish_lock(mc)
    await _converges(mc, writers, PARTS4, primaries, "merge4")
    assert (await columns(mc)).count("c2") == 1
    assert a.proc.poll() is None and b.proc.poll() is None


@pytest.mark.slow
async def test_every_service_instance_and_worker_restarted_in_turn_converges(
    mcluster: MigrationCluster,
) -> None:
    """A rolling restart by hand (SIGTERM each process in turn, the leader last, start it
    again) while a lock waits and the writers run: the lock completes after it, by itself."""
    mc = mcluster
    primaries = await _primaries(mc)
    members = MemberStore(mc.store.kv, mc.store.root)
    services = {"orc-a": await start_service_process(mc, "orc-a")}

    async def leads(name: str) -> bool:
        return await members.leader() == name

    await eventually(lambda: leads("orc-a"), 15, "orc-a to lead")
    services["orc-b"] = await start_service_process(mc, "orc-b")
    procs = await _workers(mc)
    writers = await _lock_waiting(mc)
    for name in ("w1", "w2"):
        await _restart(mc, procs, name, signal.SIGTERM)
    for name in ("orc-b", "orc-a"):  # the follower first, the leader last
        services[name].proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(asyncio.to_thread(services[name].proc.wait), 10)
        assert rc == 0, services[name].log_text()[-3000:]
        services[name] = await start_service_process(mc, name)
    await _finish_lock(mc)
    await _converges(mc, writers, PARTS4, primaries, "merge4")
    assert (await columns(mc)).count("c2") == 1
    assert all(s.proc.poll() is None for s in services.values())
    assert all(p.poll() is None for p in procs.values())
