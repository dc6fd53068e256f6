"""Crash safety of the service itself: the real `orchestrator serve` process SIGKILLs itself at a
named fault point in the middle of a reparent; a fresh service process, given no command, makes
the shard converge.

For each fault point of PRS, ERS, InitShardPrimary and TER:

1. a 3-tablet shard with semi_sync durability (so no acknowledged write can legitimately be
   lost) and an application writer running throughout;
2. `orchestrator serve` as a separate process with fast health settings and
   `ORC_FAULT_POINTS=<point>`;
3. the reparent is started the way an operator or a tool would:
   - PRS: `orchestrator ctl PlannedReparentShard commerce/0 --new-primary zone1-102`;
   - ERS: the primary's mysqld is SIGKILLed and the service's own automatic recovery
     (DeadPrimary -> EmergencyReparentShard) runs into the fault point: no command is sent,
     which is how a dead primary is handled in production;
   - InitShardPrimary: `ctl InitShardPrimary commerce/0 zone1-101 --force`, onto the CURRENT
     primary (forcing it onto another live tablet is refused by design: it moves no data);
   - TER: the primary is moved with plain SQL (what an outside failover tool does), then
     `ctl TabletExternallyReparented zone1-102`. Both service processes run with
     `disable_active_reparents`, the documented set-up when an outside tool owns failover:
     with recoveries active, the health checks would fight the tool mid-switch (the old
     primary, read-only for a moment, "repaired" back to writable takes writes the new one
     never gets). The restarted service still resumes the interrupted TER: it only records
     what the tool did, as the command itself is not gated by that setting;
4. the service must die by SIGKILL (return code -9) at the point;
5. the service is started again without fault points and, with no command sent, the test waits
   for convergence: no shard lock held, no workflow record left `running`, exactly one writable
   server and the topology agreeing with MySQL (`check_invariants`), the serving graph naming
   it, and the writer's acknowledged writes taken by it; then every acknowledged write must be
   on the final primary.

One line per point is printed with the time from the restart to convergence.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures_cluster import Shard, ShardFactory, Writer
from tests.helpers.service_proc import ServiceProc, reap, start_ctl
from tests.helpers.split_brain import SplitBrainWatcher
from tests.workflows.test_crash_points import WRITE_FAILURES, external_switch
from topo.records import WorkflowStatus
from workflows.faults import ENV_VAR, KNOWN_POINTS

pytestmark = pytest.mark.slow

KS, SHARD = "commerce", "0"
# From the restart of the service to a converged shard; the dead service's shard lock (TTL 3 s)
# and election key (TTL 2 s) must expire first.
CONVERGE_TIMEOUT_S = 30.0
DIE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Case:
    point: str
    # The ctl command (after `--server URL`), or () when the service acts by itself (ERS).
    command: tuple[str, ...]
    # Which tablets may be the primary once converged.
    expect: frozenset[str]
    # "kill_primary": SIGKILL the primary's mysqld; "external_switch": move it with plain SQL.
    prepare: str = ""
    # ORC_* settings of both service processes (besides the fast health settings).
    settings: tuple[tuple[str, str], ...] = ()


def _cases() -> list[Case]:
    prs = ("PlannedReparentShard", f"{KS}/{SHARD}", "--new-primary", "zone1-102")
    isp = ("InitShardPrimary", f"{KS}/{SHARD}", "zone1-101", "--force")
    ter = ("TabletExternallyReparented", "zone1-102")
    p101, p102 = frozenset({"zone1-101"}), frozenset({"zone1-102"})
    out = [
        # Killed before anything changed: the shard is healthy, the dead PRS is only marked
        # interrupted (nothing to finish), the primary stays.
        Case("prs.before_demote", prs, p101),
        # Primary demoted and not serving (then also: elect promoted; topology published):
        # the service resumes the PRS from its record and finishes the move.
        *(Case(f"prs.{p}", prs, p102) for p in ("after_demote", "after_promote")),
        Case("prs.after_topology", prs, p102),
        # Automatic ERS: the restarted service sees the dead primary again (or the half-done
        # failover) and runs ERS once more; either replica may win (the most advanced).
        *(Case(f"ers.{p}", (), frozenset({"zone1-102", "zone1-103"}), prepare="kill_primary")
          for p in ("after_stop_io", "before_promote", "after_promote", "after_topology")),
        *(Case(f"isp.{p}", isp, p101) for p in ("after_promote", "after_journal")),
        *(Case(f"ter.{p}", ter, p102, prepare="external_switch",
               settings=(("ORC_DISABLE_ACTIVE_REPARENTS", "true"),))
          for p in ("after_verify", "after_tablets")),
    ]  # fmt: skip
    assert {c.point for c in out} == KNOWN_POINTS, "a fault point has no service crash test"
    return out


CASES = _cases()


async def _wait_acked(writer: Writer, n: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while len(writer.acked) < n:
        assert time.monotonic() < deadline, (
            f"writer stuck at {len(writer.acked)} acknowledged writes ({writer.errors} errors)"
        )
        await asyncio.sleep(0.02)


async def _converged(shard: Shard, writer: Writer, acked_at_restart: int) -> str | None:
    """The final primary if the shard has converged, else None."""
    if await shard.store.get_lock(KS, SHARD) is not None:
        return None
    records = await shard.store.list_workflows()
    if any(r.status == WorkflowStatus.RUNNING for r in records):
        return None
    try:
        primary = await shard.check_invariants(wait_s=0)
    except AssertionError:
        return None
    if await shard.serving() != (primary, True):
        return None
    # The application writes again (through the serving graph), not just survives.
    if len(writer.acked) < acked_at_restart + 5:
        return None
    return primary


async def _wait_converged(
    shard: Shard, writer: Writer, service: ServiceProc, timeout: float
) -> tuple[str, float]:
    acked_at_restart = len(writer.acked)
    deadline = service.started_at + timeout
    while True:
        primary = await _converged(shard, writer, acked_at_restart)
        if primary is not None:
            return primary, time.monotonic() - service.started_at
        if time.monotonic() > deadline:
            why = await _why_not(shard)
            raise AssertionError(
                f"not converged {timeout}s after the restart: {why}\n"
                f"--- service log (tail) ---\n{service.log_tail()}"
            )
        await asyncio.sleep(0.2)


async def _why_not(shard: Shard) -> str:
    lock = await shard.store.get_lock(KS, SHARD)
    running = [f"{r.action} {r.id}" for r in await shard.store.list_workflows()
               if r.status == WorkflowStatus.RUNNING]  # fmt: skip
    try:
        await shard.check_invariants(wait_s=0)
        inv = "ok"
    except AssertionError as e:
        inv = str(e)
    return (
        f"lock {lock.describe() if lock else None}; running workflows {running}; "
        f"invariants: {inv}; serving graph {await shard.serving()}"
    )


def _what_it_did(service: ServiceProc) -> str:
    """The restarted service's recoveries and sweeps, from its log, in one short phrase."""
    done = []
    for line in service.log_path.read_text(errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        text = str(ev.get("event", ""))
        if text.startswith("recovery ") and ev.get("problem"):
            done.append(f"{ev['problem']}: {text.split(':', 1)[0].removeprefix('recovery ')}")
        elif "marked interrupted" in text:
            done.append("swept")
    return ", ".join(done) or "nothing"


@pytest.mark.parametrize("case", CASES, ids=[c.point for c in CASES])
async def test_service_killed_at_fault_point_converges_after_restart(
    shard_factory: ShardFactory, tmp_path: Path, case: Case
) -> None:
    shard = await shard_factory(tablets=3, durability="semi_sync")
    await shard.create_test_table()
    writer = Writer(shard)
    writer.start()
    log1, log2, ctl_log = (tmp_path / n for n in ("serve-1.log", "serve-2.log", "ctl.log"))
    services: list[ServiceProc] = []
    ctl = None
    watch = SplitBrainWatcher(shard)
    try:
        await _wait_acked(writer, 20)
        await watch.start()
        settings = dict(case.settings)
        first = await ServiceProc.start(shard, log1, env={**settings, ENV_VAR: case.point})
        services.append(first)
        await first.wait_leader(shard)

        if case.prepare == "kill_primary":
            shard.server("zone1-101").kill()
        elif case.prepare == "external_switch":
            await external_switch(shard, "zone1-101", "zone1-102")
        if case.command:
            ctl = await start_ctl(first.url, *case.command, log_path=ctl_log)

        rc = await first.wait_exit(DIE_TIMEOUT_S)
        killed_at = time.monotonic()
        assert rc == -9, (
            f"{case.point}: the service was not SIGKILLed at the fault point (rc {rc})\n"
            f"--- ctl ---\n{ctl_log.read_text() if ctl_log.exists() else ''}\n"
            f"--- service log (tail) ---\n{first.log_tail()}"
        )
        if ctl is not None:
            ctl_rc = await reap(ctl)
            assert ctl_rc != 0, f"ctl succeeded although the service died: {ctl_log.read_text()}"

        second = await ServiceProc.start(shard, log2, env=settings)  # no fault points
        services.append(second)
        primary, took = await _wait_converged(shard, writer, second, CONVERGE_TIMEOUT_S)
        acked = len(writer.acked)
        await _wait_acked(writer, acked + 10)
    finally:
        await writer.stop()
        await watch.stop()
        if ctl is not None and ctl.returncode is None:
            await reap(ctl, 1)
        for s in services:
            await s.stop()

    watch.assert_no_split_brain()
    writer.check_errors(*WRITE_FAILURES)

    assert primary in case.expect, f"{case.point}: converged onto {primary}, want {case.expect}"
    assert await shard.check_invariants() == primary
    missing = await writer.missing_on(primary)
    assert missing == [], f"{case.point}: acknowledged writes missing on {primary}: {missing}"
    records = await shard.store.list_workflows()
    assert not [r.id for r in records if r.status == WorkflowStatus.RUNNING]
    interrupted = [r.action for r in records if r.status == WorkflowStatus.INTERRUPTED]
    print(
        f"\nSERVICE-CRASH {case.point:<18} killed (rc -9) "
        f"{killed_at - first.started_at:5.2f}s after start; restart -> converged in "
        f"{took:5.2f}s ({_what_it_did(services[-1])}); primary {primary}; "
        f"interrupted {interrupted}; {len(writer.acked)} writes acknowledged, none lost; "
        f"failures {dict(writer.error_kinds)}; {watch.summary()}",
        flush=True,
    )
