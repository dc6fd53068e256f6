"""The health loop: every `health_interval_s`, check the tablets of the shards this instance
owns, analyse those shards, and start their recoveries.

One cycle:
  1. read the topology once: keyspaces, shards, tablets, held shard locks (a handful of etcd
     reads per cycle, whatever the number of tablets)
  2. on the leader, after it became leader and every 30 s (sooner when a record left by a
     holder that just died can be judged): mark `interrupted` the workflow records whose
     holder is gone; every 60 s: bound the recovery log (`Recoveries.maintain`); every cycle:
     clear the maintenance tags of windows that have ended (a compare-and-swap of the tablet
     record, so an extension written meanwhile is kept). Then read the recovery pauses
  3. per shard this instance checks (`ownership`: the shards it owns by rendezvous hashing over
     the live instances, and for a moment those it just lost), one pass: check its tablets in
     parallel, each bounded by `health_timeout_s`, on connections of the checker's own (a check
     never waits behind a workflow's statement); analyse the shard (`analysis.analyze`); let
     `recovery.Recoveries` decide and say so in one sentence (it recovers the shards this
     instance owns). The passes start spread over part of the interval (`pacing_window`), at
     most `health_concurrency` checks at a time

A change of the live instances (one died, one joined) runs a cycle at once. With
`health_share_shards` off every instance checks every tablet and only the leader recovers (the
behaviour before sharing). The sweeps and maintenance of step 2 stay on the leader either way:
they are a few etcd reads per 30-60 s for the whole fleet, not worth dividing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.health import metrics
from orchestrator.health.analysis import Problem, TabletHealth, analyze
from orchestrator.health.control import RecoveryControl
from orchestrator.health.control import load as load_control
from orchestrator.health.ownership import Ownership
from orchestrator.health.primary_watch import PrimaryWatches
from orchestrator.health.recovery import Recoveries, mark_interrupted_workflows
from orchestrator.runtime import collect_between_cycles
from topo.errors import TopoError
from topo.records import Keyspace, LockInfo, Shard, Tablet
from workflows.common import MAINTENANCE_TAG, iso8601, maintenance_of
from workflows.env import ClientPool, MysqlCredentials

if TYPE_CHECKING:
    from orchestrator.service import Service

log = structlog.get_logger(__name__)

SWEEP_EVERY_S = 30.0
# Pacing (see `pacing_window`): passes due within this of each other start together.
PACING_TICK_S = 0.005
# A cycle's checks are started no faster than one per this much of the window, so a small
# fleet (a few shards) is checked at once and only a large one (hundreds of tablets) is spread.
PACING_PER_CHECK_S = 0.001
# Behind schedule by more than this, the loop was stalled (a garbage collection, a burst of
# other work): the remaining starts shift by the delay instead of all starting at once.
PACING_STALL_S = 0.02


def pacing_window(tablets: int, interval_s: float, spread: float) -> float:
    """Over how many seconds one cycle spreads the starts of its shards' checks: `spread` of
    the interval for a large fleet, less for a small one (`PACING_PER_CHECK_S` per tablet).
    At 2,000 tablets and 1 Hz the checks start 2,500 a second over 0.8 s rather than all at
    once: the process then needs well under a core during the window, and a check waits
    for no other."""
    return min(max(0.0, spread) * interval_s, tablets * PACING_PER_CHECK_S)


@dataclass(frozen=True)
class Topology:
    """One cycle's read of the topology."""

    keyspaces: dict[str, Keyspace]
    shards: list[Shard]
    tablets: list[Tablet]
    locks: dict[str, LockInfo]  # by "ks/shard"


class HealthChecker:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = s = service.settings
        self.store = service.store
        self.pool = ClientPool(
            MysqlCredentials(
                user=s.mysql_user,
                password=s.mysql_password,
                connect_timeout=min(s.mysql_connect_timeout_s, s.health_timeout_s),
                query_timeout=s.health_timeout_s,
            )
        )
        self._limit = asyncio.Semaphore(max(1, s.health_concurrency))
        self._health: dict[str, TabletHealth] = {}
        self._tablets: dict[str, Tablet] = {}  # every tablet (for describing one)
        self._checked: dict[str, Tablet] = {}  # those this instance checks
        self._problems: dict[str, list[Problem]] = {}
        self.recovery = Recoveries(self)
        # Event-driven detection: a lost connection to a primary checks its shard at once.
        self.primary_watch = PrimaryWatches(self)
        self.cycles = 0
        # Set (and replaced) at the end of every cycle: the console pushes fresh health to its
        # pages when it fires, instead of polling the snapshot.
        self.cycled = asyncio.Event()
        self.last_cycle_at = 0.0
        self.last_cycle_ms = 0.0
        self.last_stalls_ms = 0.0  # how far the last cycle's starts moved back (_check_shards)
        self._swept_term = -1
        self._next_sweep_at = 0.0
        self._sweep_locks: dict[str, LockInfo] = {}
        # The last cycle's recovery pauses and keyspaces (for /api/v1/health).
        self.control = RecoveryControl()
        self.keyspaces: list[Keyspace] = []
        self.ownership = Ownership(
            service.store.kv, service.store.root, s.instance_id, enabled=s.health_share_shards,
            # Long enough for the new owner's first cycle also on a busy host (checking twice
            # costs only CPU): two cycles, and at least the lease TTL.
            handover_s=max(2 * s.health_interval_s + s.health_timeout_s, s.election_ttl_s),
        )  # fmt: skip
        # This instance's own record of what it checked: cycles per shard ("ks/shard"), when it
        # (last) began checking each shard it checks now and when it last checked each shard
        # (time.time(), when the cycle's checks ended), and the shards it owns.
        self.shard_checks: dict[str, int] = {}
        self.checking_since: dict[str, float] = {}
        self.last_checked_at: dict[str, float] = {}
        self.owned: list[str] = []
        self.shards: list[str] = []  # every shard of the last cycle's topology

    # -- what the API shows ------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """The latest check of every tablet, JSON-able, by alias."""
        return {alias: self._describe(alias, h) for alias, h in sorted(self._health.items())}

    def recoveries(self) -> list[dict[str, Any]]:
        """The recoveries this instance ran or blocked, newest first, from memory: executed,
        skipped and blocked (with the reason)."""
        return self.recovery.entries()

    async def recovery_history(self) -> list[dict[str, Any]]:
        """Every instance's recoveries, newest first, from the recovery log in etcd (what the
        API shows: the same on every instance, and after the leader that ran them died)."""
        return await self.recovery.history()

    def problems(self) -> dict[str, list[dict[str, Any]]]:
        """The latest analysis of every shard ("ks/shard" -> problems; empty: healthy)."""
        return {k: [p.to_dict() for p in v] for k, v in sorted(self._problems.items())}

    def _describe(self, alias: str, h: TabletHealth) -> dict[str, Any]:
        tablet = self._tablets.get(alias)
        s = h.status
        r = s.replication if s is not None else None
        return {
            "alias": alias,
            "keyspace": tablet.keyspace if tablet else None,
            "shard": tablet.shard if tablet else None,
            "type": tablet.type.value if tablet else None,
            "healthy": h.healthy,
            "error": h.error,
            "read_only": s.read_only if s else None,
            "replicating_from": f"{r.source_host}:{r.source_port}" if r and r.source_host else None,
            "io_running": r.io_running if r else None,
            "io_state": r.io_state if r else None,
            "sql_running": r.sql_running if r else None,
            "lag_seconds": r.lag_seconds if r else None,
            "last_io_error": r.last_io_error if r else None,
            "last_sql_error": r.last_sql_error if r else None,
            "position": s.position.encode() if s else None,
            "errant": None if s is None or s.errant.is_empty() else s.errant.encode(),
            "checked_at": h.checked_at,
            "consecutive_failures": h.consecutive_failures,
            "last_healthy_at": h.last_healthy_at or None,
        }

    def last_healthy_at(self, alias: str) -> float | None:
        """When this tablet last answered a health check of this instance (None: not seen)."""
        h = self._health.get(alias)
        return h.last_healthy_at if h is not None and h.last_healthy_at else None

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        interval = self.settings.health_interval_s
        loop = asyncio.get_running_loop()
        log.info("health checks started", interval_s=interval,
                 timeout_s=self.settings.health_timeout_s)  # fmt: skip
        if self.ownership.enabled:  # know the live instances first (etcd down: go on alone)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(2.0, 2 * interval)):
                    await self.ownership.first_read.wait()
        try:
            async with asyncio.TaskGroup() as tg:
                self.recovery.task_group = tg
                while True:
                    started = loop.time()
                    wake = self.ownership.wake  # a change during the cycle: the next one at once
                    try:
                        await self.cycle()
                    except TopoError as e:
                        log.warning("health cycle: topology unavailable", error=str(e))
                    except Exception:
                        log.exception("health cycle failed")
                    self.last_cycle_ms = round((loop.time() - started) * 1000, 1)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, interval - (loop.time() - started))):
                            await wake.wait()
        finally:
            try:
                await self.primary_watch.stop()  # re-raises our own cancellation, hence:
            finally:
                self.recovery.task_group = None
                await self.pool.close()

    async def cycle(self) -> None:
        topo = await self.read_topology()
        own = self.ownership
        checked_shards = {s.key for s in topo.shards if own.checks(s.key)}
        checked = [t for t in topo.tablets if f"{t.keyspace}/{t.shard}" in checked_shards]
        await self._forget_unchecked(topo.tablets, checked)
        if self.service.election.is_leader:  # before the analyses, which see what it marks
            await self._sweep_interrupted(topo.locks)
            await self.recovery.maintain(self.service.election.terms)
            await self._end_expired_maintenance(topo.tablets)
        control = await load_control(self.store)
        self.control = control
        paused: dict[tuple[str, str], bool] = {}
        by_shard: dict[str, list[Tablet]] = {}
        for t in checked:
            by_shard.setdefault(f"{t.keyspace}/{t.shard}", []).append(t)
        shards = [s for s in topo.shards if s.key in checked_shards]

        def shard_pass(shard: Shard) -> Callable[[], Coroutine[Any, Any, None]]:
            return lambda: self._check_shard(
                shard, by_shard.get(shard.key, []), topo, control, paused
            )

        await self._check_shards([shard_pass(s) for s in shards], len(checked))
        self.primary_watch.follow([s for s in shards if self.recovers(s.key)[0]], topo.tablets)
        for key in set(self._problems) - checked_shards:
            del self._problems[key]
        for key in set(self.checking_since) - checked_shards:
            del self.checking_since[key]
        self.owned = sorted(k for k in checked_shards if own.owns(k))
        self.shards = sorted(s.key for s in topo.shards)
        metrics.set_tablets(checked, self._health)
        metrics.set_health_gauges(checked, self._health, self._problems, paused)
        self.keyspaces = list(topo.keyspaces.values())
        self.cycles += 1
        self.last_cycle_at = time.time()
        self.cycled.set()
        self.cycled = asyncio.Event()
        collect_between_cycles()  # rather than amid the next cycle's checks (orchestrator.runtime)

    async def _check_shards(
        self, passes: list[Callable[[], Coroutine[Any, Any, None]]], tablets: int
    ) -> None:
        """Run the shards' passes (check, analyse, decide), their starts spread evenly over the
        cycle's pacing window (`pacing_window`): a fleet's checks all started at once would
        queue behind each other and the host, and the last of them would wait far longer than
        a check takes. Each shard is analysed as soon as its own tablets are checked, so
        spreading delays no verdict: a shard is checked every interval, at its own moment.

        After a stall of the event loop (`PACING_STALL_S`), the passes that fell due meanwhile
        are not started all at once: the rest of the schedule moves back by the delay. A burst
        of hundreds of checks would queue them behind each other (the stall would have cost
        every one of them its length again); a cycle longer by the stall costs nothing."""
        loop = asyncio.get_running_loop()
        window = pacing_window(tablets, self.settings.health_interval_s,
                               self.settings.health_spread)  # fmt: skip
        started = first = loop.time()
        async with asyncio.TaskGroup() as tg:
            for i, run_pass in enumerate(passes):
                delay = started + window * i / len(passes) - loop.time()
                if delay > PACING_TICK_S:  # start the passes due within a tick together
                    await asyncio.sleep(delay)
                elif delay < -PACING_STALL_S:
                    started -= delay
                tg.create_task(run_pass())
        self.last_stalls_ms = round((started - first) * 1000, 1)

    async def _check_shard(
        self, shard: Shard, tablets: list[Tablet], topo: Topology, control: RecoveryControl,
        paused: dict[tuple[str, str], bool],
    ) -> None:  # fmt: skip
        """One shard's pass: check its tablets, analyse it, let `recovery.Recoveries` decide."""
        await self._check_together(tablets)
        key = shard.key
        now = time.time()
        self.shard_checks[key] = self.shard_checks.get(key, 0) + 1
        self.checking_since.setdefault(key, now)
        self.last_checked_at[key] = now
        problems = analyze(
            shard, tablets, self._health, lock=topo.locks.get(key),
            unhealthy_checks=self.settings.unhealthy_checks_to_spare,
            max_lag_s=self.settings.replica_lag_threshold_s, now=now,
        )  # fmt: skip
        self._problems[key] = problems
        keyspace = topo.keyspaces.get(shard.keyspace)
        paused[(shard.keyspace, shard.name)] = not self.settings.recoveries_enabled or (
            control.paused(shard.keyspace, shard.name, keyspace) is not None
        )
        recover, why_not = self.recovers(key)
        try:
            await self.recovery.consider(
                keyspace, key, problems, recover=recover, why_not=why_not, control=control
            )
        except TopoError as e:
            log.warning(f"no action: shard {key}: topology unavailable", error=str(e))
        except Exception:
            log.exception(f"no action: shard {key}: deciding its recovery failed")

    def recovers(self, key: str) -> tuple[bool, str]:
        """Whether this instance recovers shard `key` (it owns it; with shards not shared: it
        leads), and if not, why not."""
        own = self.ownership
        if own.enabled:
            return own.owns(key), f"owned by {own.owner(key)}"
        return self.service.election.is_leader, "not the leader"

    async def read_topology(self) -> Topology:
        """Two range reads whatever the size of the fleet: every tablet, then every keyspace,
        shard and lock (read last, so that a workflow that started meanwhile shows its lock)."""
        tablets = await self.store.list_tablets()
        keyspaces, shards, locks = await self.store.list_shards_and_locks()
        return Topology(
            {k.name: k for k in keyspaces},
            shards,
            tablets,
            {f"{li.keyspace}/{li.shard}": li for li in locks},
        )

    # -- checks ---------------------------------------------------------------------------------

    async def _forget_unchecked(self, tablets: list[Tablet], checked: list[Tablet]) -> None:
        """Of every tablet (`tablets`), those no longer checked here (gone, or their shard now
        checked by another instance) lose their connection and their health: if their shard
        comes back, it starts afresh rather than from a stale count of failures."""
        current = {t.alias: t for t in tablets}
        mine = {t.alias: t for t in checked}
        for alias, old in list(self._checked.items()):
            new = mine.get(alias)
            if new is None or new.address != old.address:
                await self.pool.drop(old)
                if new is None:
                    self._health.pop(alias, None)
        self._tablets, self._checked = current, mine

    async def check_now(self, tablets: Iterable[Tablet]) -> dict[str, TabletHealth]:
        """Check these tablets now (updating the latest health); returns every tablet's health."""
        await self._check_together(list(tablets))
        return dict(self._health)

    async def _check_together(self, tablets: list[Tablet]) -> None:
        """Check `tablets` in parallel: the first in this task, the others in tasks of their own
        (a task fewer per shard than gathering them all, at thousands of checks a second)."""
        if not tablets:
            return
        others = [asyncio.create_task(self._check(t)) for t in tablets[1:]]
        try:
            await self._check(tablets[0])  # handles every error of a check itself
            if others:
                await asyncio.wait(others)
        except BaseException:  # cancelled: never leave a check running behind us
            for task in others:
                task.cancel()
            raise

    async def _check(self, tablet: Tablet) -> TabletHealth:
        """One check. Its time is bounded by the client: the connect by the pool's connect
        timeout (at most `health_timeout_s`), the statements by `health_timeout_s` (no deadline
        of our own on top: arming a timer costs about as much as parsing the answer)."""
        async with self._limit:
            started = time.monotonic()
            try:
                status = await self.pool.get(tablet).status(timeout=self.settings.health_timeout_s)
                error = None
            except Exception as e:
                status, error = None, str(e) or type(e).__name__
            metrics.observe_probe(tablet, time.monotonic() - started, status is not None)
        prev = self._health.get(tablet.alias)
        failures = 0 if status is not None else (prev.consecutive_failures if prev else 0) + 1
        now = time.time()
        last_healthy = now if status is not None else (prev.last_healthy_at if prev else 0.0)
        health = TabletHealth(tablet.alias, status, error, now, failures, last_healthy)
        if prev is not None and prev.healthy != health.healthy:
            log.info(f"tablet {tablet.alias} is {'healthy again' if health.healthy else 'unhealthy'}",
                     error=error)  # fmt: skip
        self._health[tablet.alias] = health
        return health

    # -- restarts ---------------------------------------------------------------------------------

    async def _sweep_interrupted(self, locks: dict[str, LockInfo]) -> None:
        """On becoming leader, then every 30 s: workflows left running by a dead holder.

        Also sooner, after a crash and restart (a holder that died just before this instance
        took over): when a workflow's shard lock goes away (released, or its lease expired),
        and when a record that was too recent to be judged on an unlocked shard can be judged.
        Until it is marked, the shard shows a reparent that seems to be running."""
        term = self.service.election.terms
        released = any(
            li.workflow_id and locks.get(key) != li for key, li in self._sweep_locks.items()
        )
        self._sweep_locks = dict(locks)
        if term == self._swept_term and time.monotonic() < self._next_sweep_at and not released:
            return
        now = time.monotonic()
        self._swept_term, self._next_sweep_at = term, now + SWEEP_EVERY_S
        grace = self.settings.lock_ttl_s + 2 * self.settings.health_interval_s
        pending: list[float] = []
        try:
            marked = await mark_interrupted_workflows(
                self.store, grace_s=grace, locks=locks, pending=pending
            )
        except TopoError as e:
            log.warning("could not check for interrupted workflows", error=str(e))
            return
        if pending:
            due = now + max(0.0, min(pending) - time.time())
            self._next_sweep_at = min(self._next_sweep_at, due)
        for wf_id in marked:
            log.warning(f"workflow {wf_id} marked interrupted: its holder is gone; the health "
                        "checks repair its shard")  # fmt: skip

    async def _end_expired_maintenance(self, tablets: list[Tablet]) -> None:
        """A maintenance window that has ended leaves no tag behind: the tag is removed by a
        compare-and-swap of the tablet record that re-checks the window on the fresh read (an
        extension or a new window written meanwhile is kept)."""
        now = time.time()
        for t in tablets:
            window = maintenance_of(t)
            if window is None or window.until > now:
                continue

            cleared: list[bool] = []

            def fn(cur: Tablet, cleared: list[bool] = cleared) -> Tablet | None:
                cleared.clear()
                w = maintenance_of(cur)
                if w is None or w.until > time.time():
                    return None
                cleared.append(True)
                return dataclasses.replace(
                    cur, tags={k: v for k, v in cur.tags.items() if k != MAINTENANCE_TAG}
                )

            try:
                await self.store.update_tablet_fields(t.alias, fn)
            except TopoError as e:
                log.warning(f"could not end the maintenance window of {t.alias}", error=str(e))
                continue
            if cleared:
                log.info(f"maintenance window of {t.alias} ended at {iso8601(window.until)} "
                         f"({window.reason or 'no reason given'}): tag cleared")  # fmt: skip

    # -- events ---------------------------------------------------------------------------------

    async def publish(self, kind: str, payload: dict[str, Any]) -> None:
        """Publish an event without ever failing the caller (a recovery must not fail because
        the outbox is unavailable)."""
        events = getattr(self.service, "events", None)
        if events is None:
            return
        try:
            async with asyncio.timeout(10):
                await events.publish(kind, payload)
        except Exception as e:
            log.warning("could not publish event", kind=kind, error=str(e) or type(e).__name__)
