"""Cluster operations with a merge task running under steady writers (issue 10): SIGTERM
drains a worker (its subtasks move at once, not after the lease TTL), SIGTERM makes a leader
resign (a follower leads within about a second, not after the election TTL), and DM's
membership commands through the real CLI: list-member, transfer-source, offline-member."""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from typing import Any

import pytest

from migration.members import MemberStore
from tests.fixtures_cluster import eventually
from tests.migration.conftest import (
    PARTS,
    TARGET,
    MigrationCluster,
    ShardWriter,
    ctl,
    merge_task,
    seed,
    start_service_process,
    wait_target_equals,
)

LONG_LEASE_S = 15  # far above what a drain takes: a handover within it is not the TTL's doing


async def _status(mc: MigrationCluster, source: str) -> dict[str, Any]:
    st = await mc.ops().query_status("merge-orders")
    return next(e for e in st["sources"] if e["sourceStatus"]["source"] == source)


async def _applying_on(mc: MigrationCluster, source: str, worker: str, epoch: int = 0) -> bool:
    e = await _status(mc, source)
    sub = e["subTaskStatus"][0]
    return (
        e["sourceStatus"]["worker"] == worker
        and e["sourceStatus"]["epoch"] > epoch
        and sub["unit"] == "Sync"
        and sub["stage"] == "Running"
    )


async def _writers(mc: MigrationCluster) -> list[ShardWriter]:
    ids = await seed(mc, 300)
    writers = [ShardWriter(mc, sh, db, t, first_id=ids[sh][-1] + 1) for sh, db, t in PARTS]
    for w in writers:
        w.start(ids[w.shard])
    return writers


async def _workers(mc: MigrationCluster, names: tuple[str, ...], lease_ttl: int) -> dict:
    procs = {n: mc.start_worker_process(n, lease_ttl=lease_ttl) for n in names}

    async def registered() -> bool:
        return {w.name for w in await mc.mstore.list_workers()} >= set(names)

    await eventually(registered, 20, "the workers to register")
    return procs


async def _primaries(mc: MigrationCluster) -> list[str]:
    return [await mc.primary_alias(sh) for sh, _db, _t in PARTS]


async def _exit_code(proc: Any, timeout: float) -> int | None:
    try:
        return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
    except TimeoutError:
        return proc.poll()


@pytest.mark.slow
async def test_sigterm_drains_a_worker_and_its_subtasks_move_at_once_not_after_the_lease_ttl(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    primaries = await _primaries(mc)
    writers = await _writers(mc)
    mc.start_scheduler()
    procs = await _workers(mc, ("w1", "w2"), LONG_LEASE_S)
    await mc.ops().start(merge_task(mc))
    source = f"{mc.keyspace}/-80"
    for s in (source, f"{mc.keyspace}/80-"):
        await eventually(functools.partial(_applying_on_any, mc, s), 30, f"{s} to sync")
    before = (await _status(mc, source))["sourceStatus"]
    holder, epoch = before["worker"], before["epoch"]
    other = "w2" if holder == "w1" else "w1"

    procs[holder].send_signal(signal.SIGTERM)
    sent = time.monotonic()
    await eventually(lambda: _applying_on(mc, source, other, epoch), 10, f"{source} on {other}")
    moved_s = time.monotonic() - sent
    rc = await _exit_code(procs[holder], 8)
    exited_s = time.monotonic() - sent
    print(f"\nworker SIGTERM: subtask syncing on {other} after {moved_s * 1000:.0f} ms, "
          f"process exited after {exited_s * 1000:.0f} ms (lease TTL {LONG_LEASE_S} s)")  # fmt: skip
    assert rc == 0, mc.worker_log(holder)[-3000:]
    assert moved_s < 3.0, f"moved after {moved_s:.2f}s"
    log = mc.worker_log(holder)
    assert "worker drained and deregistered" in log
    assert "cancelled past the bound" not in log, log[-3000:]

    for w in writers:
        await w.wait_acked(50)
        await w.stop()
    await wait_target_equals(mc, PARTS, TARGET)
    assert await _primaries(mc) == primaries  # no failover on the MySQL side


async def _applying_on_any(mc: MigrationCluster, source: str) -> bool:
    e = await _status(mc, source)
    sub = e["subTaskStatus"][0]
    return bool(e["sourceStatus"]["worker"]) and sub["unit"] == "Sync" and sub["stage"] == "Running"


@pytest.mark.slow
async def test_sigterm_leader_resigns_and_a_follower_leads_within_a_second(
    mcluster: MigrationCluster,
) -> None:
    mc = mcluster
    members = MemberStore(mc.store.kv, mc.store.root)
    ttl = 10  # a handover within a second is not the lease expiring
    a = await start_service_process(mc, "orc-a", election_ttl=ttl)

    async def leads(name: str) -> bool:
        return await members.leader() == name

    await eventually(lambda: leads("orc-a"), 15, "orc-a to lead")
    b = await start_service_process(mc, "orc-b", election_ttl=ttl)
    a.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    await eventually(lambda: leads("orc-b"), ttl, "orc-b to lead", every=0.02)
    took = time.monotonic() - sent
    rc = await _exit_code(a.proc, 10)
    print(f"\nleader SIGTERM: orc-b leads after {took * 1000:.0f} ms (election TTL {ttl} s)")
    assert took < 1.5, f"orc-b led {took:.2f}s after the SIGTERM"
    assert rc == 0, a.log_text()[-3000:]
    log = a.log_text()
    assert '"leader resigned"' in log and '"orchestrator stopped"' in log, log[-3000:]
    assert "Traceback" not in log, log[-5000:]
    code, out = await ctl(b.url, "list-member", "--leader")
    assert code == 0, out
    assert out["members"][0]["leader"]["name"] == "orc-b"


@pytest.mark.slow
async def test_sigterm_on_a_service_with_its_own_worker_resigns_and_drains_it(
    mcluster: MigrationCluster,
) -> None:
    """`orchestrator serve` running the leader and a worker: on SIGTERM a follower leads at
    once and the embedded worker's subtasks move to the other worker at once (its lease TTL
    is 15 s), then the process exits 0."""
    mc = mcluster
    primaries = await _primaries(mc)
    writers = await _writers(mc)
    members = MemberStore(mc.store.kv, mc.store.root)
    a = await start_service_process(mc, "orc-a", election_ttl=10, worker=True,
                                    env={"ORC_WORKER_LEASE_TTL_S": str(LONG_LEASE_S)})  # fmt: skip
    await eventually(lambda: _leader_is(members, "orc-a"), 15, "orc-a to lead")
    await start_service_process(mc, "orc-b", election_ttl=10)
    procs = {"w1": mc.start_worker_process("w1", lease_ttl=LONG_LEASE_S)}

    async def both() -> bool:
        return {w.name for w in await mc.mstore.list_workers()} == {"orc-a", "w1"}

    await eventually(both, 20, "both workers to register")
    await mc.ops().start(merge_task(mc))
    s1, s2 = f"{mc.keyspace}/-80", f"{mc.keyspace}/80-"
    for s in (s1, s2):
        await eventually(functools.partial(_applying_on_any, mc, s), 30, f"{s} to sync")
    on_a = [s for s in (s1, s2) if (await _status(mc, s))["sourceStatus"]["worker"] == "orc-a"]
    assert len(on_a) == 1, "the scheduler spreads the two subtasks"
    epoch = (await _status(mc, on_a[0]))["sourceStatus"]["epoch"]

    a.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    await eventually(lambda: _leader_is(members, "orc-b"), 5, "orc-b to lead", every=0.02)
    led_s = time.monotonic() - sent
    await eventually(lambda: _applying_on(mc, on_a[0], "w1", epoch), 10, f"{on_a[0]} on w1")
    moved_s = time.monotonic() - sent
    rc = await _exit_code(a.proc, 10)
    print(f"\nservice SIGTERM: orc-b leads after {led_s * 1000:.0f} ms, the embedded worker's "
          f"subtask syncing on w1 after {moved_s * 1000:.0f} ms")  # fmt: skip
    assert rc == 0, a.log_text()[-3000:]
    assert led_s < 1.5 and moved_s < 4.0
    assert "Traceback" not in a.log_text(), a.log_text()[-5000:]
    assert procs["w1"].poll() is None

    for w in writers:
        await w.wait_acked(50)
        await w.stop()
    await wait_target_equals(mc, PARTS, TARGET)
    assert await _primaries(mc) == primaries


@pytest.mark.slow
async def test_membership_commands_through_the_cli_with_a_task_running(
    mcluster: MigrationCluster,
) -> None:
    """list-member, transfer-source and offline-member (worker, then the leading master)."""
    mc = mcluster
    primaries = await _primaries(mc)
    writers = await _writers(mc)
    a = await start_service_process(mc, "orc-a")
    members = MemberStore(mc.store.kv, mc.store.root)
    await eventually(lambda: _leader_is(members, "orc-a"), 15, "orc-a to lead")
    b = await start_service_process(mc, "orc-b")
    procs = await _workers(mc, ("w1", "w2"), LONG_LEASE_S)
    await mc.ops().start(merge_task(mc))
    s1, s2 = f"{mc.keyspace}/-80", f"{mc.keyspace}/80-"
    for s in (s1, s2):
        await eventually(functools.partial(_applying_on_any, mc, s), 30, f"{s} to sync")

    # list-member: both instances, the leader marked; both workers bound, one subtask each.
    code, out = await ctl(b.url, "list-member")
    assert code == 0, out
    kinds = {next(iter(m)): next(iter(m.values())) for m in out["members"]}
    assert kinds["leader"]["name"] == "orc-a"
    masters = {m["name"]: m for m in kinds["master"]["masters"]}
    assert set(masters) == {"orc-a", "orc-b"}
    assert masters["orc-a"]["leader"] and not masters["orc-b"]["leader"]
    assert masters["orc-b"]["addr"] == b.url.removeprefix("http://")
    workers = {w["name"]: w for w in kinds["worker"]["workers"]}
    assert set(workers) == {"w1", "w2"}
    assert all(w["stage"] == "bound" and len(w["subtasks"]) == 1 for w in workers.values())
    assert all(w["version"] and w["uptime_s"] >= 0 for w in workers.values())
    code, out = await ctl(a.url, "list-member", "--worker", "--name", "w2")
    assert [w["name"] for w in out["members"][0]["worker"]["workers"]] == ["w2"], out

    # transfer-source: s1 to the worker that does not run it, with a new epoch.
    before = (await _status(mc, s1))["sourceStatus"]
    to = "w2" if before["worker"] == "w1" else "w1"
    code, out = await ctl(a.url, "transfer-source", s1, to)
    assert code == 0, out
    assert out["moved"][0]["to"] == to and out["moved"][0]["epoch"] > before["epoch"]
    await eventually(lambda: _applying_on(mc, s1, to, before["epoch"]), 15, f"{s1} on {to}")
    code, out = await ctl(a.url, "transfer-source", s1, "nobody")
    assert code != 0 and "nobody" in str(out), out

    # offline-member --type worker: `to` (running both subtasks now) drains and exits.
    keep = "w1" if to == "w2" else "w2"
    sent = time.monotonic()
    code, out = await ctl(a.url, "offline-member", "--type", "worker", "--name", to)
    assert code == 0, out
    for s in (s1, s2):
        await eventually(functools.partial(_applying_on, mc, s, keep), 10, f"{s} on {keep}")
    moved_s = time.monotonic() - sent
    assert await _exit_code(procs[to], 8) == 0, mc.worker_log(to)[-3000:]
    print(f"\noffline-member worker: both subtasks syncing on {keep} after "
          f"{moved_s * 1000:.0f} ms (lease TTL {LONG_LEASE_S} s)")  # fmt: skip
    assert moved_s < 5.0
    code, out = await ctl(b.url, "list-member", "--worker")
    assert [w["name"] for w in out["members"][0]["worker"]["workers"]] == [keep], out

    # offline-member --type master: the leader resigns, orc-b leads, orc-a serves on.
    sent = time.monotonic()
    code, out = await ctl(b.url, "offline-member", "--type", "master", "--name", "orc-a")
    assert code == 0, out
    assert "resigned" in out["msg"], out
    await eventually(lambda: _leader_is(members, "orc-b"), 5, "orc-b to lead")
    print(f"offline-member master: orc-b leads after {(time.monotonic() - sent) * 1000:.0f} ms")
    assert a.proc.poll() is None

    for w in writers:
        await w.wait_acked(50)
        await w.stop()
    await wait_target_equals(mc, PARTS, TARGET)
    assert await _primaries(mc) == primaries


async def _leader_is(members: MemberStore, name: str) -> bool:
    return await members.leader() == name
