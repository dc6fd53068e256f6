"""Crash safety: a workflow SIGKILLed at any named fault point converges when rerun.

For each fault point the workflow runs in a child process (`tests.helpers.run_workflow`) with
`ORC_FAULT_POINTS=<point>`, so it kills itself there as a crash would: no cleanup, no unlock.
The same command then runs again in-process. It must wait for the dead child's lock lease to
expire (TTL 3 s here), finish the job, and leave the shard with exactly one writable primary,
a topology that agrees with MySQL, and every write the application saw acknowledged present on
that primary. An application writer runs throughout (where the shard has a primary to write to).
A rerun that elects another tablet than the crashed run had promoted fences that one first.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_cluster import Shard, ShardFactory, Writer
from tests.helpers.run_workflow import run_action
from tests.helpers.split_brain import SplitBrainWatcher
from workflows.faults import ENV_VAR, KNOWN_POINTS

REPO = Path(__file__).resolve().parents[2]
LOCK_TTL = 3
# Lease expiry is checked by etcd's lessor loop (every 500 ms) on top of the TTL.
MAX_LOCK_WAIT_S = LOCK_TTL + 1.5
KS, SHARD = "commerce", "0"
# Why an application write may fail around a crashed reparent: refused by a fenced primary the
# serving graph still names, its server dead (ERS), or a semi-sync commit left without an ACK.
WRITE_FAILURES = ("read_only", "unreachable", "timeout")

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    point: str
    action: str
    args: dict[str, Any]
    expect_primary: str | frozenset[str]
    durability: str = "none"
    # "kill_primary": SIGKILL the primary's mysqld first (ERS);
    # "external_switch": move the primary with plain SQL first (TER).
    prepare: str = ""


def _cases() -> list[Case]:
    shard = {"keyspace": KS, "shard": SHARD}
    prs = {**shard, "new_primary": "zone1-102"}
    # Re-initialise a live shard around its primary: the forced InitShardPrimary an operator
    # runs to repair the replicas. Forcing another tablet on a live shard promotes it without
    # demoting the primary or letting it catch up (two writable servers, acknowledged writes
    # lost, as Vitess warns for its InitShardPrimary): PRS is the tool for that.
    isp = {**shard, "primary": "zone1-101", "force": True}
    ter = {"tablet": "zone1-102"}
    out = [
        *(Case(f"prs.{p}", "PlannedReparentShard", prs, "zone1-102")
          for p in ("before_demote", "after_demote", "after_promote", "after_topology")),
        # Semi-sync, so that every acknowledged write is on a replica when the primary dies.
        # Either replica may be the most advanced (the last commit's ACK came from one).
        *(Case(f"ers.{p}", "EmergencyReparentShard", shard, frozenset({"zone1-102", "zone1-103"}),
               durability="semi_sync", prepare="kill_primary")
          for p in ("after_stop_io", "before_promote", "after_promote", "after_topology")),
        *(Case(f"isp.{p}", "InitShardPrimary", isp, "zone1-101")
          for p in ("after_promote", "after_journal")),
        *(Case(f"ter.{p}", "TabletExternallyReparented", ter, "zone1-102",
               prepare="external_switch")
          for p in ("after_verify", "after_tablets")),
    ]  # fmt: skip
    assert {c.point for c in out} == KNOWN_POINTS, "a fault point has no crash test"
    return out


CASES = _cases()


@dataclass
class Child:
    returncode: int
    stdout: str
    stderr: str
    died_at: float  # monotonic
    elapsed_s: float


@dataclass
class Outcome:
    child: Child
    lock_wait_s: float
    since_death_s: float
    primary: str
    acked_before: int
    acked_after: int
    result: dict[str, Any] = field(default_factory=dict)


async def run_child(shard: Shard, action: str, args: dict[str, Any], point: str) -> Child:
    """The workflow in a process of its own, killed by its own hand at `point`."""
    creds = shard.env.creds
    cmd = [
        sys.executable, "-m", "tests.helpers.run_workflow",
        "--etcd", ",".join(shard.state.etcd_endpoints), "--root", shard.state.spec.root,
        "--mysql-user", creds.user, "--mysql-password", creds.password,
        "--lock-ttl", str(LOCK_TTL), action, json.dumps(args),
    ]  # fmt: skip
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=REPO, env={**os.environ, ENV_VAR: point},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    died_at = time.monotonic()
    assert proc.returncode is not None
    return Child(proc.returncode, out.decode(), err.decode(), died_at, died_at - started)


async def rerun(shard: Shard, action: str, args: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The same command in-process; returns its result and how long it waited for the lock."""
    lock_ms: list[float] = []

    def progress(ev: dict[str, Any]) -> None:
        if ev.get("step") == "lock_shard" and ev.get("status") == "done":
            lock_ms.append(float(ev["ms"]))

    result = await run_action(shard.env, action, args, progress=progress)
    assert lock_ms, "the rerun never reported taking the shard lock"
    return result.to_dict(), lock_ms[0] / 1000


async def external_switch(shard: Shard, old: str, new: str) -> None:
    """What an outside failover tool does, in plain SQL: fence the old primary, let the new one
    catch up, make it a writable primary, repoint the old primary and the other replicas."""
    o, n = shard.admin(old), shard.admin(new)
    await o.execute("SET GLOBAL read_only = 1")
    row = await o.fetch_one("SELECT @@GLOBAL.gtid_binlog_pos AS pos")
    assert row is not None
    waited = await n.fetch_one("SELECT MASTER_GTID_WAIT(%s, 10) AS r", (row["pos"],))
    assert waited is not None and waited["r"] == 0, f"{new} did not catch up: {waited}"
    for sql in ("STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0"):
        await n.execute(sql)
    src = shard.server(new)
    change = (
        "CHANGE MASTER TO MASTER_HOST = %s, MASTER_PORT = %s, MASTER_USER = %s, "
        "MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1"
    )
    creds = (src.host, src.port, shard.env.creds.user, shard.env.creds.password)
    for alias in shard.aliases:
        if alias == new:
            continue
        c = shard.admin(alias)
        await c.execute("STOP SLAVE")
        if alias == old:
            await c.execute("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos")
        await c.execute(change, creds)
        await c.execute("START SLAVE")


async def crash_and_rerun(shard_factory: ShardFactory, case: Case) -> Outcome:
    shard = await shard_factory(tablets=3, durability=case.durability)
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    try:
        await _wait_acked(writer, 20)
        async with SplitBrainWatcher(shard):
            if case.prepare == "kill_primary":
                shard.server("zone1-101").kill()
            elif case.prepare == "external_switch":
                await external_switch(shard, "zone1-101", "zone1-102")

            child = await run_child(shard, case.action, case.args, case.point)
            assert child.returncode == -9, (
                f"{case.point}: child was not SIGKILLed at the fault point "
                f"(rc {child.returncode})\n"
                f"stdout: {child.stdout}\nstderr (tail): {child.stderr[-3000:]}"
            )
            holder = await shard.store.get_lock(KS, SHARD)
            assert holder is not None and holder.action == case.action, (
                f"the dead child's lock should still be held until its lease expires: {holder}"
            )

            result, lock_wait = await rerun(shard, case.action, case.args)
            since_death = time.monotonic() - child.died_at
            acked_before = len(writer.acked)
            await _wait_acked(writer, acked_before + 20)
    finally:
        await writer.stop()
    writer.check_errors(*WRITE_FAILURES)
    primary = await shard.check_invariants()
    want = case.expect_primary
    assert primary in (want if isinstance(want, frozenset) else {want}), (
        f"{case.point}: primary is {primary}, want {want}"
    )
    missing = await writer.missing_on(primary)
    assert missing == [], f"{case.point}: acknowledged writes missing on {primary}: {missing}"
    return Outcome(child, lock_wait, since_death, primary, acked_before, len(writer.acked), result)


async def _wait_acked(writer: Writer, n: int, timeout: float = 15.0) -> None:
    """Until the writer has `n` acknowledged writes (the serving graph names a primary that
    takes them)."""
    deadline = time.monotonic() + timeout
    while len(writer.acked) < n:
        assert time.monotonic() < deadline, (
            f"writer stuck at {len(writer.acked)} acknowledged writes ({writer.errors} errors)"
        )
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("case", CASES, ids=[c.point for c in CASES])
async def test_rerun_after_crash_at_fault_point_converges(
    shard_factory: ShardFactory, case: Case
) -> None:
    o = await crash_and_rerun(shard_factory, case)
    assert o.lock_wait_s <= MAX_LOCK_WAIT_S, f"rerun waited {o.lock_wait_s:.2f}s for the lock"
    print(
        f"\nCRASH {case.point:<20} child rc={o.child.returncode} after {o.child.elapsed_s:.2f}s;"
        f" rerun (changed={o.result['changed']}) waited {o.lock_wait_s:.2f}s for the lock"
        f" (TTL {LOCK_TTL}s), done"
        f" {o.since_death_s:.2f}s after the crash; primary {o.primary};"
        f" {o.acked_after} writes acknowledged ({o.acked_after - o.acked_before} after the"
        " rerun), none lost",
        flush=True,
    )


async def test_lock_holder_sigkilled_mid_workflow_next_command_gets_lock_after_lease_ttl(
    shard_factory: ShardFactory,
) -> None:
    """A PRS killed after demoting the primary still holds the shard lock (its lease is alive);
    the next command waits for the lease to expire, not for a person, and takes over."""
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    args = {"keyspace": KS, "shard": SHARD, "new_primary": "zone1-102"}
    child = await run_child(shard, "PlannedReparentShard", args, "prs.after_demote")
    assert child.returncode == -9, child.stderr[-3000:]
    (held,) = await shard.store.list_locks()
    assert held.action == "PlannedReparentShard" and held.holder_pid not in (0, os.getpid())

    _, waited = await rerun(shard, "PlannedReparentShard", args)
    since_death = time.monotonic() - child.died_at
    print(
        f"\nLOCK dead holder pid {held.holder_pid}: next command waited {waited:.2f}s for the"
        f" lock (TTL {LOCK_TTL}s); reparent finished {since_death:.2f}s after the crash",
        flush=True,
    )
    # Not at once (the lease outlives its holder) and not much past the TTL.
    assert LOCK_TTL / 3 <= waited <= MAX_LOCK_WAIT_S
    assert await shard.store.list_locks() == []
    assert await shard.check_invariants() == "zone1-102"


@pytest.mark.parametrize(
    ("action", "point", "prepare"),
    [("PlannedReparentShard", "prs.after_promote", ""),
     ("EmergencyReparentShard", "ers.after_promote", "kill_primary")],
    ids=["prs", "ers"],
)  # fmt: skip
async def test_rerun_electing_another_tablet_never_leaves_two_writable_servers(
    shard_factory: ShardFactory, action: str, point: str, prepare: str
) -> None:
    """A reparent crashed right after promoting a replica (zone1-102 for PRS, the most advanced
    one for ERS); the operator reruns it naming the other replica. The half-promoted one is
    fenced before the other is promoted: at the rerun's own promotion point only one server is
    writable, and the watcher never sees two writable servers."""
    shard = await shard_factory(tablets=3, durability="semi_sync" if prepare else "none")
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    try:
        await _wait_acked(writer, 20)
        async with SplitBrainWatcher(shard):
            if prepare == "kill_primary":
                shard.server("zone1-101").kill()
            base = {"keyspace": KS, "shard": SHARD}
            first = (
                {**base, "new_primary": "zone1-102"} if action == "PlannedReparentShard" else base
            )
            child = await run_child(shard, action, first, point)
            assert child.returncode == -9, child.stderr[-3000:]
            (promoted,) = await shard.writable()
            assert promoted in ("zone1-102", "zone1-103"), promoted
            other = "zone1-103" if promoted == "zone1-102" else "zone1-102"

            seen: list[list[str]] = []

            async def at_promotion() -> None:
                seen.append(await shard.writable())

            env = shard.with_faults(**{point.replace(".", "_"): at_promotion})
            try:
                r = await run_action(env, action, {**base, "new_primary": other})
            finally:
                await env.close()
            assert r.new_primary == other
            assert seen == [[other]], f"writable servers at the rerun's promotion: {seen}"
            acked_before = len(writer.acked)
            await _wait_acked(writer, acked_before + 20)
    finally:
        await writer.stop()
    writer.check_errors(*WRITE_FAILURES)
    print(f"\nRERUN {point} {promoted} -> {other}: writable at promotion {seen[0]}", flush=True)
    assert await shard.check_invariants() == other
    assert await writer.missing_on(other) == []


@pytest.mark.parametrize("point", ["isp.after_promote", "isp.after_journal"])
async def test_forced_init_shard_primary_onto_another_tablet_crashed_at_point_converges(
    shard_factory: ShardFactory, point: str
) -> None:
    """InitShardPrimary --force moving a quiesced shard (no write in flight: it moves no data,
    so it refuses an elect that lacks a transaction) from zone1-101 to zone1-102, SIGKILLed at
    `point`; the same command rerun converges on zone1-102 with every acknowledged write, and
    the application writes there afterwards."""
    shard = await shard_factory(tablets=3)
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    await _wait_acked(writer, 20)
    await writer.stop()
    for alias in ("zone1-102", "zone1-103"):
        await writer.wait_all_on(alias)  # quiesced: every tablet holds every write
    args = {"keyspace": KS, "shard": SHARD, "primary": "zone1-102", "force": True}
    after = Writer(shard, _next_id=10**6)
    try:
        async with SplitBrainWatcher(shard) as watch:
            child = await run_child(shard, "InitShardPrimary", args, point)
            assert child.returncode == -9, (
                f"{point}: child was not SIGKILLed (rc {child.returncode})\n"
                f"stdout: {child.stdout}\nstderr (tail): {child.stderr[-3000:]}"
            )
            result, lock_wait = await rerun(shard, "InitShardPrimary", args)
            assert result["new_primary"] == "zone1-102", result
            assert await shard.check_invariants() == "zone1-102"
            after.start()
            await _wait_acked(after, 20)
    finally:
        await after.stop()
    after.check_errors(*WRITE_FAILURES)
    assert await shard.check_invariants() == "zone1-102"
    assert await writer.missing_on("zone1-102") == []
    assert await after.missing_on("zone1-102") == []
    for alias in ("zone1-101", "zone1-103"):
        await after.wait_all_on(alias)
    print(f"\nCRASH {point} forced move 101 -> 102: rerun waited {lock_wait:.2f}s for the lock; "
          f"{len(writer.acked)} writes before, {len(after.acked)} after, none lost; "
          f"{watch.summary()}", flush=True)  # fmt: skip
