"""Recovery: from the problems `analysis` found to the workflow that fixes each one.

Only the instance that owns a shard recovers it (`ownership`; the leader when shards are not
shared). Every recovery is re-confirmed on fresh data right before it acts (a
new read of the shard and a new health check of its tablets), because the analysis it started
from may be a cycle old:

    DeadPrimary            -> EmergencyReparentShard (the workflow takes the shard lock)
    ReplicaNotReplicating,
    ReplicaWrongSource     -> ReparentTablet (the workflow takes the shard lock)
    ReplicaWritable        -> read_only=ON         } under the shard lock, taken here
    PrimaryReadOnly        -> read_only=OFF        } (action "Recovery:<problem>"), so they never
    InterruptedReparent,
    PrimaryNotServing      -> rerun the shard's interrupted reparent workflow (workflows.resume);
                              with none, PrimaryNotServing -> writable + serving (undo), under
                              the shard lock, so it never races a reparent
    ReplicationStopped     -> START SLAVE          } by that lock
    UnhealthyTablet        -> type spare (target_type keeps the old type)
    SpareTabletHealthy     -> back to target_type, unless it holds transactions the primary
                              never had: then it stays spare, tagged needs_rebuild (NeedsRebuild)
    anything else          -> reported, nothing done

Paused recovery (`orchestrator.health.control`: globally, a keyspace's `auto_recovery`, a
shard) and tablets under a maintenance window (BeginMaintenance) are never recovered: the
problems are still reported, and each recovery that would have run is recorded as blocked with
the reason (category "paused" or "maintenance"), once per stretch.

With `disable_active_reparents` an external tool owns failover and, as the Vitess documentation
puts it, "manages the replication process": then only the spare transitions run, everything else
is reported as blocked (fencing a replica or repointing one could fight the tool mid-failover).
One exception: an interrupted TabletExternallyReparented (the tool's own report, cut short when
the orchestrator died) is resumed, as the command itself is not gated by the setting.

Anti-flapping. A failover (DeadPrimary) is not repeated on a shard within `recovery_block_s` of
the previous one: two dead primaries in a row usually mean something else is wrong (a load that
kills every primary, a flapping network), and ping-ponging the primary makes it worse. The time
of the last failover is kept in etcd (`{root}/global/recovery/<ks>/<shard>`), so a new leader
respects the block too. Tablet-level repairs are not blocked by it (they converge, and a
failover usually needs a few of them afterwards), but one that failed is not retried on the same
tablet for a short cooldown. A blocked recovery is recorded with its reason once (then updated in
place), not once per cycle.

Recoveries run as tasks in the health checker's task group, one at a time per shard, so a slow
failover never delays the checks of other shards.

The history. Every recovery (run, skipped or blocked) is one record in etcd
(`topo.recovery_log`, `{root}/global/recovery_log/<id>`): created when it starts (result
`running`, written while the recovery runs, so a failover never waits for it) or is first
blocked, then updated by compare-and-swap with its result (a blocked one's count and reason at
most every `BLOCKED_WRITE_EVERY_S`). A result, and a new blocked record, are in etcd before
this instance's in-memory entry shows them. `GetRecoveries` and `/api/v1/health` read that log, so every instance
lists the same history, also after the leader that ran them died. The leader bounds it
(`maintain`: the newest 500, none older than 7 days) and marks `interrupted` the records a
previous leader left `running`. An etcd outage never fails a recovery: the record is then
missing from the log (said in the log), the recovery runs all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from mysqlctl.client import MysqlClient
from orchestrator import events
from orchestrator.health import metrics
from orchestrator.health.analysis import (
    REPLICATING_TYPES,
    Problem,
    ProblemKind,
    analyze,
)
from orchestrator.health.control import RecoveryControl
from topo.errors import BadVersionError, LockTimeoutError, NodeExistsError, NoNodeError, TopoError
from topo.lock import ShardLock
from topo.records import Keyspace, LockInfo, Tablet, TabletType, WorkflowRecord, WorkflowStatus
from topo.recovery_log import RecoveryLog, RecoveryRecord, new_recovery_id
from workflows.common import ShardView, read_shard, set_primary_serving
from workflows.emergency_reparent import EmergencyReparentOptions, emergency_reparent_shard
from workflows.replication import NEEDS_REBUILD_TAG, reparent_tablet, transactions_missing_on
from workflows.resume import RESUMABLE, rerun

if TYPE_CHECKING:
    from orchestrator.health.checker import HealthChecker

log = structlog.get_logger(__name__)

T = TypeVar("T")

ACTIONS: dict[ProblemKind, str] = {
    ProblemKind.DEAD_PRIMARY: "EmergencyReparentShard",
    ProblemKind.REPLICA_WRITABLE: "SetReadOnly",
    ProblemKind.INTERRUPTED_REPARENT: "ResumeReparent",
    ProblemKind.PRIMARY_NOT_SERVING: "ResumeReparent|RestorePrimaryServing",
    ProblemKind.PRIMARY_READ_ONLY: "SetReadWrite",
    ProblemKind.UNHEALTHY_TABLET: "ChangeTabletType(spare)",
    ProblemKind.SPARE_TABLET_HEALTHY: "ChangeTabletType(target)",
    ProblemKind.REPLICA_NOT_REPLICATING: "ReparentTablet",
    ProblemKind.REPLICA_WRONG_SOURCE: "ReparentTablet",
    ProblemKind.REPLICATION_STOPPED: "StartReplication",
}
# The order in which one shard's problems are worked on (the dict order above).
PRIORITY = {kind: i for i, kind in enumerate(ACTIONS)}
# Recoveries that change the shard as a whole: after one, the next cycle re-analyses first.
SHARD_WIDE = frozenset(
    {
        ProblemKind.DEAD_PRIMARY,
        ProblemKind.INTERRUPTED_REPARENT,
        ProblemKind.PRIMARY_NOT_SERVING,
        ProblemKind.PRIMARY_READ_ONLY,
    }
)
# What still runs when an external tool owns failover (disable_active_reparents): the tablet
# types in topology, never who is writable or who replicates from whom.
TOPOLOGY_ONLY = frozenset({ProblemKind.UNHEALTHY_TABLET, ProblemKind.SPARE_TABLET_HEALTHY})
MAX_ENTRIES = 200
LOCK_WAIT_S = 1.0
# A blocked recovery's record is updated in place every cycle in memory; in etcd at most this
# often (its count, last_seen and reason), so a long pause is not a write per second.
BLOCKED_WRITE_EVERY_S = 5.0
# How often the leader prunes the recovery log and marks records a dead leader left running.
MAINTAIN_EVERY_S = 60.0
# A record still `running` after this long, from another instance, was left by a leader that
# died (or lost the lead) mid-recovery: no recovery takes that long.
INTERRUPTED_AFTER_S = 600.0


class _Skipped(Exception):
    """The recovery found nothing to do after all (fixed meanwhile, shard locked...)."""


class Recoveries:
    """Decides, runs and records the recoveries of the shards this instance owns."""

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker
        self.service = checker.service
        self.settings = checker.service.settings
        self.store = checker.service.store
        self.task_group: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._entries: deque[dict[str, Any]] = deque(maxlen=MAX_ENTRIES)
        self.log = RecoveryLog(self.store.kv, self.store.root)
        self._stored: dict[str, float] = {}  # id -> when its etcd record was last written
        self._maintained_term = -1
        self._next_maintain_at = 0.0
        self._failed_at: dict[tuple[ProblemKind, str | None], float] = {}
        self._last_sentence: dict[str, str] = {}
        # One decision at a time per shard: the cycle and a primary watch may both ask.
        self._deciding: dict[str, asyncio.Lock] = {}

    # -- what the API shows ------------------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """The recoveries this instance ran or blocked, newest first, from memory (the shared
        history is `history`)."""
        return [dict(e) for e in reversed(self._entries)]

    async def history(self) -> list[dict[str, Any]]:
        """Every instance's recoveries, newest first, from the recovery log in etcd."""
        return [r.to_entry() for r in await self.log.list_records()]

    def running(self) -> list[str]:
        return sorted(k for k, t in self._tasks.items() if not t.done())

    # -- deciding ----------------------------------------------------------------------------

    async def consider(
        self, keyspace: Keyspace | None, shard_key: str, problems: list[Problem], *, recover: bool,
        why_not: str = "not the leader", control: RecoveryControl | None = None,
    ) -> None:  # fmt: skip
        """Decide what to do about one shard's problems and say it in one sentence. Only with
        `recover` (this instance owns the shard, or leads when shards are not shared) does it
        act; otherwise it says `why_not`. Decisions on one shard are serialized (the health
        cycle and a primary watch may both ask), so two never both see "no recovery running"
        and start one each."""
        async with self._deciding.setdefault(shard_key, asyncio.Lock()):
            await self._consider(
                keyspace, shard_key, problems, recover=recover, why_not=why_not, control=control
            )

    async def _consider(
        self, keyspace: Keyspace | None, shard_key: str, problems: list[Problem], *, recover: bool,
        why_not: str, control: RecoveryControl | None,
    ) -> None:  # fmt: skip
        if not problems:
            self._say(shard_key, f"no action: shard {shard_key} healthy", quiet=True)
            return
        if problems[0].kind == ProblemKind.SHARD_LOCKED:
            self._say(shard_key, f"no action: shard {shard_key} {problems[0].detail}", quiet=True)
            return
        listing = "; ".join(p.describe() for p in problems)
        actionable = sorted(
            (p for p in problems if p.kind in ACTIONS), key=lambda p: PRIORITY[p.kind]
        )
        if not actionable:
            self._say(shard_key, f"no action: shard {shard_key}: {listing} (report only)")
            return
        if not recover:
            self._say(shard_key, f"no action: shard {shard_key}: {listing}; {why_not}", quiet=True)
            return
        if not self.settings.recoveries_enabled:  # the operator's off switch: say it, no more
            self._say(
                shard_key, f"no action: shard {shard_key}: {listing}; recoveries are disabled"
            )
            return
        ks_name, _, shard_name = shard_key.partition("/")
        paused = (control or RecoveryControl()).paused(ks_name, shard_name, keyspace)
        if paused is not None:
            for p in actionable:
                await self._record_blocked(p, "paused", paused[1])
            self._say(shard_key, f"no action: shard {shard_key}: {listing}; {paused[1]}")
            return
        task = self._tasks.get(shard_key)
        if task is not None and not task.done():
            self._say(
                shard_key, f"no action: shard {shard_key}: a recovery is still running", quiet=True
            )
            return
        in_maintenance = {
            p.tablet: p.detail for p in problems if p.kind == ProblemKind.TABLET_IN_MAINTENANCE
        }
        plan: list[Problem] = []
        blocked: list[str] = []
        for p in actionable:
            why = (
                ("maintenance", f"{p.tablet} is {in_maintenance[p.tablet]}")
                if p.tablet in in_maintenance
                else await self._blocked(keyspace, p)
            )
            if why is not None:
                await self._record_blocked(p, *why)
                blocked.append(f"{p.kind.value} {p.tablet or ''}".strip() + f" blocked: {why[1]}")
                if p.kind == ProblemKind.DEAD_PRIMARY:
                    break  # with the primary dead, nothing else is worth doing
                continue
            plan.append(p)
            if p.kind in SHARD_WIDE:
                break
        if not plan:
            self._say(shard_key, f"no action: shard {shard_key}: {'; '.join(blocked)}")
            return
        steps = ", ".join(f"{p.kind.value} {p.tablet} -> {ACTIONS[p.kind]}" for p in plan)
        self._say(shard_key, f"recovering {shard_key}: {steps}", always=True)
        self._spawn(shard_key, self._run_plan(plan))

    def _say(
        self, shard_key: str, sentence: str, *, quiet: bool = False, always: bool = False
    ) -> None:
        """One sentence per shard per cycle: debug when routine or repeated, info when new."""
        repeated = self._last_sentence.get(shard_key) == sentence
        self._last_sentence[shard_key] = sentence
        if always or not (quiet or repeated):
            log.info(sentence)
        else:
            log.debug(sentence)

    def _spawn(self, shard_key: str, work: Coroutine[Any, Any, None]) -> None:
        if self.task_group is None:
            raise RuntimeError("recoveries need the health checker's task group")
        self._tasks[shard_key] = self.task_group.create_task(work, name=f"recovery {shard_key}")

    async def _blocked(self, keyspace: Keyspace | None, p: Problem) -> tuple[str, str] | None:
        """(category, reason) if `p` must not be recovered now."""
        if self.settings.disable_active_reparents and p.kind not in TOPOLOGY_ONLY:
            if p.kind == ProblemKind.INTERRUPTED_REPARENT and await self._interrupted_ter(p):
                return None  # finishing the tool's own report is not an active reparent
            return "disabled", (
                "active reparents are disabled (disable_active_reparents): an external tool "
                "owns failover and replication, the health checks only report"
            )
        if p.kind == ProblemKind.DEAD_PRIMARY:
            last = await self.last_failover(p.keyspace, p.shard)
            if last is not None:
                age = time.time() - float(last.get("time", 0))
                left = self.settings.recovery_block_s - age
                if left > 0:
                    return "block_period", (
                        f"shard {p.keyspace}/{p.shard} was recovered {age:.1f}s ago "
                        f"({last.get('action')} for {last.get('problem')}, {last.get('result')});"
                        f" anti-flapping blocks automatic failover for another {left:.1f}s "
                        f"(recovery_block_s={self.settings.recovery_block_s:g})"
                    )
            return None
        failed = self._failed_at.get((p.kind, p.tablet))
        if failed is not None:
            left = self._cooldown_s - (time.monotonic() - failed)
            if left > 0:
                return "cooldown", f"the last attempt failed; retrying in {left:.1f}s"
        return None

    @property
    def _cooldown_s(self) -> float:
        return min(self.settings.recovery_block_s, max(10 * self.settings.health_interval_s, 5.0))

    # -- the block period, shared through etcd -------------------------------------------------

    def _failover_key(self, keyspace: str, shard: str) -> str:
        return f"{self.store.root}/global/recovery/{keyspace}/{shard}"

    async def last_failover(self, keyspace: str, shard: str) -> dict[str, Any] | None:
        kv = await self.store.kv.get(self._failover_key(keyspace, shard))
        if kv is None:
            return None
        try:
            data = json.loads(kv.value)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    async def _remember_failover(self, entry: dict[str, Any]) -> None:
        """The block period runs from the end of the failover (a slow one must not eat it)."""
        key = self._failover_key(entry["keyspace"], entry["shard"])
        record = {k: entry.get(k) for k in (
            "problem", "tablet", "action", "result", "reason", "instance_id")}  # fmt: skip
        body = json.dumps({**record, "started_at": entry["time"], "time": time.time()}).encode()
        kv = self.store.kv
        for _ in range(10):
            current = await kv.get(key)
            try:
                if current is None:
                    await kv.create(key, body)
                else:
                    await kv.update(key, body, current.mod_revision)
                return
            except (NodeExistsError, BadVersionError):
                continue

    # -- running -----------------------------------------------------------------------------

    async def _run_plan(self, plan: list[Problem]) -> None:
        try:
            for p in plan:  # a shard-wide recovery, if any, is last (see `consider`)
                await self._execute(p)
        except Exception:  # never let one shard's recovery take the health checker down
            log.exception(f"recovery of {plan[0].keyspace}/{plan[0].shard} failed unexpectedly")

    async def _execute(self, p: Problem) -> dict[str, Any]:
        action = ACTIONS[p.kind]
        entry = self._entry(p, action, "running", "")
        self._entries.append(entry)
        # The "running" record is written while the recovery runs (a failover must not wait
        # for it), and before its result is.
        first_write = asyncio.create_task(self._store(dict(entry)))
        started = time.monotonic()
        handler = self._handlers()[p.kind]
        bound = log.bind(keyspace=p.keyspace, shard=p.shard, tablet=p.tablet, problem=p.kind.value)
        outcome: dict[str, Any]
        try:
            outcome = {"result": "succeeded", "reason": await handler(p)}
            self._failed_at.pop((p.kind, p.tablet), None)
        except _Skipped as e:
            outcome = {"result": "skipped", "reason": str(e)}
        except asyncio.CancelledError:
            # Not written to etcd (we are being cancelled): the next leader marks the record
            # interrupted.
            first_write.cancel()
            entry.update(result="cancelled", reason="the health checker stopped",
                         duration_ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip
            raise
        except Exception as e:
            outcome = {"result": "failed", "reason": str(e) or type(e).__name__}
            self._failed_at[(p.kind, p.tablet)] = time.monotonic()
        outcome["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
        # In etcd first, then in memory: whoever sees the result here finds it in the log too.
        await first_write
        await self._store({**entry, **outcome})
        entry.update(outcome)
        level = bound.warning if entry["result"] == "failed" else bound.info
        level(f"recovery {entry['result']}: {p.keyspace}/{p.shard} {p.kind.value} "
              f"{p.tablet or ''} -> {action}: {entry['reason']}", ms=entry["duration_ms"])  # fmt: skip
        metrics.count_recovery(p, action, entry["result"])
        if p.kind == ProblemKind.DEAD_PRIMARY and entry["result"] in ("succeeded", "failed"):
            try:
                await self._remember_failover(entry)
            except TopoError as e:
                bound.warning("could not record the failover time in etcd", error=str(e))
        if entry["result"] != "skipped":
            await self.checker.publish(events.RECOVERY_RUN, dict(entry))
        return entry

    def _entry(
        self, p: Problem, action: str, result: str, reason: str, **extra: Any
    ) -> dict[str, Any]:
        now = time.time()
        entry: dict[str, Any] = {
            "id": new_recovery_id(now),
            "time": now,
            "keyspace": p.keyspace,
            "shard": p.shard,
            "problem": p.kind.value,
            "tablet": p.tablet,
            "detail": p.detail,
            "action": action,
            "result": result,
            "reason": reason,
            "instance_id": self.store.instance_id,
            **extra,
        }
        return entry

    async def _store(self, entry: dict[str, Any]) -> None:
        """Write the entry's record to the recovery log: created the first time, then updated
        by compare-and-swap. An etcd failure is logged, never raised (the recovery goes on)."""
        rec = RecoveryRecord.from_entry(entry)

        def fn(current: RecoveryRecord) -> RecoveryRecord:
            return rec.with_revision(current.revision)

        try:
            if rec.id in self._stored:
                await self.log.update_fields(rec.id, fn)
            else:
                try:
                    await self.log.create(rec)
                except NodeExistsError:  # our earlier create did land after all
                    await self.log.update_fields(rec.id, fn)
            self._stored[rec.id] = time.monotonic()
        except NoNodeError:
            self._stored.pop(rec.id, None)  # pruned meanwhile: the log has moved past it
        except TopoError as e:
            log.warning(f"could not write recovery {rec.id} to the recovery log", error=str(e))
        if len(self._stored) > 2 * MAX_ENTRIES:  # forget the ids no longer in memory
            live = {e["id"] for e in self._entries} | {rec.id}
            self._stored = {k: v for k, v in self._stored.items() if k in live}

    async def maintain(self, term: int) -> None:
        """On the leader, after it became leader and every MAINTAIN_EVERY_S: bound the
        recovery log and mark what a previous leader left running."""
        now = time.monotonic()
        if term == self._maintained_term and now < self._next_maintain_at:
            return
        self._maintained_term, self._next_maintain_at = term, now + MAINTAIN_EVERY_S
        try:
            marked = await self.log.mark_interrupted(
                older_than_s=INTERRUPTED_AFTER_S, except_instance=self.store.instance_id
            )
            pruned = await self.log.prune()
        except TopoError as e:
            log.warning("could not maintain the recovery log", error=str(e))
            return
        if marked:
            log.warning(f"recoveries {', '.join(marked)} marked interrupted: the instance that "
                        "ran them stopped before recording a result")  # fmt: skip
        if pruned:
            log.info(f"recovery log: {pruned} old record(s) pruned")

    async def _record_blocked(self, p: Problem, category: str, reason: str) -> None:
        """A blocked recovery: one entry per stretch of blocking, updated in place."""
        for e in reversed(self._entries):
            if (e["keyspace"], e["shard"], e["problem"], e["tablet"]) == (
                p.keyspace, p.shard, p.kind.value, p.tablet
            ):  # fmt: skip
                if e["result"] == "blocked" and e.get("category") == category:
                    e.update(reason=reason, last_seen=time.time(), count=e.get("count", 1) + 1)
                    written = self._stored.get(e["id"])
                    if written is None or time.monotonic() - written >= BLOCKED_WRITE_EVERY_S:
                        await self._store(e)
                    return
                break
        now = time.time()
        entry = self._entry(
            p, ACTIONS[p.kind], "blocked", reason, category=category, last_seen=now, count=1
        )
        await self._store(entry)  # in etcd first, then in memory
        self._entries.append(entry)
        log.warning(f"recovery blocked: {p.keyspace}/{p.shard} {p.kind.value} "
                    f"{p.tablet or ''} -> {ACTIONS[p.kind]}: {reason}")  # fmt: skip
        metrics.count_recovery(p, ACTIONS[p.kind], "blocked")
        if self.task_group is not None:
            self.task_group.create_task(self.checker.publish(events.RECOVERY_RUN, dict(entry)))

    # -- the recoveries themselves -------------------------------------------------------------

    def _handlers(self) -> dict[ProblemKind, Callable[[Problem], Awaitable[str]]]:
        return {
            ProblemKind.DEAD_PRIMARY: self._emergency_reparent,
            ProblemKind.REPLICA_WRITABLE: self._set_read_only,
            ProblemKind.INTERRUPTED_REPARENT: self._finish_interrupted,
            ProblemKind.PRIMARY_NOT_SERVING: self._finish_interrupted,
            ProblemKind.PRIMARY_READ_ONLY: self._set_read_write,
            ProblemKind.UNHEALTHY_TABLET: self._to_spare,
            ProblemKind.SPARE_TABLET_HEALTHY: self._from_spare,
            ProblemKind.REPLICA_NOT_REPLICATING: self._reparent_tablet,
            ProblemKind.REPLICA_WRONG_SOURCE: self._reparent_tablet,
            ProblemKind.REPLICATION_STOPPED: self._start_replication,
        }

    async def _fresh(self, p: Problem, lock: LockInfo | None) -> tuple[ShardView, bool]:
        """Re-read the shard, re-check its tablets, re-analyse: is `p` still there?"""
        view = await read_shard(self.store, p.keyspace, p.shard)
        health = await self.checker.check_now(view.tablets)
        problems = analyze(
            view.shard, view.tablets, health, lock=lock,
            unhealthy_checks=self.settings.unhealthy_checks_to_spare,
            max_lag_s=self.settings.replica_lag_threshold_s, now=time.time(),
        )  # fmt: skip
        return view, any(q.kind == p.kind and q.tablet == p.tablet for q in problems)

    async def _confirm_unlocked(self, p: Problem) -> ShardView:
        """For workflows that take the lock themselves: confirm, lock state included."""
        lock = await self.store.get_lock(p.keyspace, p.shard)
        if lock is not None:
            raise _Skipped(f"shard locked by {lock.describe()}")
        view, present = await self._fresh(p, None)
        if not present:
            raise _Skipped("not present any more on a fresh check")
        return view

    async def _locked(
        self, p: Problem, work: Callable[[ShardLock, ShardView], Awaitable[str]]
    ) -> str:
        """Take the shard lock, confirm `p` on fresh data, then do `work`."""
        try:
            async with ShardLock(
                self.store, p.keyspace, p.shard, action=f"Recovery:{p.kind.value}",
                reason=p.describe(), timeout=LOCK_WAIT_S,
            ) as lock:  # fmt: skip
                view, present = await self._fresh(p, None)
                if not present:
                    raise _Skipped("not present any more on a fresh check")
                lock.check()
                return await work(lock, view)
        except LockTimeoutError as e:
            raise _Skipped(f"shard is locked: {e}") from e

    async def _emergency_reparent(self, p: Problem) -> str:
        await self._confirm_unlocked(p)
        opts = EmergencyReparentOptions(p.keyspace, p.shard)
        result = await self._reparent(
            "EmergencyReparentShard",
            {"keyspace": p.keyspace, "shard": p.shard, "reason": p.describe()},
            emergency_reparent_shard(self.service.env, opts),
        )
        window = (
            f", {result.unavailable_window_ms / 1000:.1f}s after the old primary's last healthy "
            "check"
            if result.unavailable_window_ms is not None
            else ""
        )
        return (
            f"{result.new_primary} is the new primary (workflow {result.workflow_id}, "
            f"promoted {result.write_unavailable_ms} ms after start{window})"
        )

    async def _reparent_tablet(self, p: Problem) -> str:
        assert p.tablet is not None
        await self._confirm_unlocked(p)
        result = await self._reparent(
            "ReparentTablet",
            {"tablet": p.tablet, "reason": p.describe()},
            reparent_tablet(self.service.env, p.tablet),
        )
        return f"{p.tablet} replicates from {result['primary']}"

    async def _reparent(self, action: str, args: dict[str, Any], work: Awaitable[T]) -> T:
        """Run a reparent workflow as the API would: reparent.* events and metrics included."""
        started = time.monotonic()
        ok = False
        changed = True
        events = getattr(self.service, "events", None)
        try:
            if events is None or not hasattr(events, "reparent"):
                result = await work
            else:
                async with events.reparent(action, {**args, "automatic": True}) as ev:
                    result = await work
                    to_dict = getattr(result, "to_dict", None)
                    ev.result = to_dict() if to_dict else result
            ok = True
            changed = bool(getattr(result, "changed", True))
            return result
        finally:
            metrics.observe_reparent(action, ok, time.monotonic() - started, changed=changed)

    def _mysql(self, view: ShardView, p: Problem) -> MysqlClient:
        assert p.tablet is not None
        return self.service.env.mysql(view.tablet(p.tablet))

    async def _set_read_only(self, p: Problem) -> str:
        async def work(lock: ShardLock, view: ShardView) -> str:
            await self._mysql(view, p).set_read_only(True)
            return f"{p.tablet}: read_only=ON"

        return await self._locked(p, work)

    async def _set_read_write(self, p: Problem) -> str:
        async def work(lock: ShardLock, view: ShardView) -> str:
            await self._mysql(view, p).set_read_only(False)
            return f"{p.tablet}: read_only=OFF"

        return await self._locked(p, work)

    async def _finish_interrupted(self, p: Problem) -> str:
        """A reparent died mid-way (no lock held, primary not serving, maybe another tablet
        already writable): rerun the shard's newest reparent workflow with its own arguments,
        which converges from wherever it stopped. With no such record, a primary that is only
        not serving is made writable and serving again (the reparent undone); two candidate
        primaries without a record are left to an operator."""
        await self._confirm_unlocked(p)
        record = await self._resumable(p)
        if record is None:
            if p.kind == ProblemKind.PRIMARY_NOT_SERVING:
                return await self._restore_serving(p)
            raise _Skipped(
                "no interrupted reparent workflow to resume; finish it with "
                "PlannedReparentShard or TabletExternallyReparented"
            )
        if self.settings.disable_active_reparents and record.action != "TabletExternallyReparented":
            raise _Skipped(f"active reparents are disabled: {record.action} not resumed")
        if record.status == WorkflowStatus.RUNNING:
            with contextlib.suppress(BadVersionError):
                await self.store.update_workflow(
                    dataclasses.replace(
                        record, status=WorkflowStatus.INTERRUPTED, updated_at=time.time(),
                        error="interrupted: its process died while it ran; resumed",
                    )
                )  # fmt: skip
        result = await self._reparent(
            record.action,
            {"keyspace": p.keyspace, "shard": p.shard, "resumes": record.id,
             "reason": p.describe()},
            rerun(self.service.env, record),
        )  # fmt: skip
        return (
            f"resumed {record.action} {record.id}: {result.new_primary} is the primary "
            f"(workflow {result.workflow_id})"
        )

    async def _interrupted_ter(self, p: Problem) -> bool:
        """The reparent to resume is a TabletExternallyReparented: an outside tool moved the
        primary and reported it, and the orchestrator died while recording it. Resuming it only
        records what the tool did (as the command would, it is not gated by
        disable_active_reparents), so it runs even when active reparents are disabled."""
        record = await self._resumable(p)
        return record is not None and record.action == "TabletExternallyReparented"

    async def _resumable(self, p: Problem) -> WorkflowRecord | None:
        """The shard's newest workflow, if it is a reparent that never finished."""
        records = [
            r for r in await self.store.list_workflows()
            if (r.keyspace, r.shard) == (p.keyspace, p.shard)
        ]  # fmt: skip
        if not records:
            return None
        newest = max(records, key=lambda r: r.created_at)
        if newest.action not in RESUMABLE:
            return None
        if newest.status not in (WorkflowStatus.RUNNING, WorkflowStatus.INTERRUPTED):
            return None
        return newest

    async def _restore_serving(self, p: Problem) -> str:
        async def work(lock: ShardLock, view: ShardView) -> str:
            await self._mysql(view, p).set_read_only(False)
            lock.check()
            await set_primary_serving(self.service.env, view, True, lock.fence)
            return f"{p.tablet} writable and serving again (an interrupted reparent undone)"

        return await self._locked(p, work)

    async def _start_replication(self, p: Problem) -> str:
        async def work(lock: ShardLock, view: ShardView) -> str:
            await self._mysql(view, p).start_replication()
            return f"{p.tablet}: replication started"

        return await self._locked(p, work)

    async def _to_spare(self, p: Problem) -> str:
        def fn(t: Tablet) -> Tablet | None:
            if t.type not in REPLICATING_TYPES:
                return None
            return dataclasses.replace(
                t, type=TabletType.SPARE, target_type=t.target_type or t.type
            )

        return await self._retype(p, fn, "unhealthy")

    async def _from_spare(self, p: Problem) -> str:
        """A spare tablet answers again: back to its target type. One that would replicate
        (an old primary made spare by a failover, typically) must first hold nothing the
        primary lacks; if it does, it stays spare, tagged needs_rebuild with the GTIDs."""

        def fn(t: Tablet) -> Tablet | None:
            if t.type != TabletType.SPARE or t.target_type in (None, TabletType.SPARE):
                return None
            return dataclasses.replace(t, type=t.target_type, target_type=None)

        async def check(lock: ShardLock, view: ShardView) -> str | None:
            tablet, primary = view.tablet(p.tablet or ""), view.primary
            if tablet.target_type not in REPLICATING_TYPES or primary is None:
                return None
            missing = await transactions_missing_on(self.service.env, tablet, primary)
            if not missing:
                return None
            why = f"errant GTIDs {missing} that the primary {primary.alias} never had"

            def tag(t: Tablet) -> Tablet | None:
                if t.tags.get(NEEDS_REBUILD_TAG) == why:
                    return None
                return dataclasses.replace(t, tags={**t.tags, NEEDS_REBUILD_TAG: why})

            lock.check()
            await self.store.update_tablet_fields(tablet.alias, tag, lock.fence)
            log.warning(f"{tablet.alias} stays spare: needs rebuild: {why}")
            return f"{tablet.alias} stays spare: needs rebuild: {why}"

        return await self._retype(p, fn, "healthy again", before=check)

    async def _retype(
        self, p: Problem, fn: Callable[[Tablet], Tablet | None], why: str,
        before: Callable[[ShardLock, ShardView], Awaitable[str | None]] | None = None,
    ) -> str:  # fmt: skip
        """Change a tablet's type under the lock; `before` may refuse (its answer is then the
        recovery's result)."""
        assert p.tablet is not None
        alias = p.tablet

        async def work(lock: ShardLock, view: ShardView) -> str:
            refused = await before(lock, view) if before is not None else None
            if refused is not None:
                return refused
            before_rec = view.tablet(alias)
            after = await self.store.update_tablet_fields(alias, fn, lock.fence)
            if after.type == before_rec.type:
                raise _Skipped(f"{alias} already is {after.type.value}")
            await self.store.rebuild_serving_graph(p.keyspace, lock.fence)
            await self.checker.publish(
                events.TABLET_TYPE_CHANGED,
                {"alias": alias, "keyspace": p.keyspace, "shard": p.shard,
                 "from": before_rec.type.value, "to": after.type.value, "reason": why,
                 "detail": p.detail},
            )  # fmt: skip
            return f"{alias}: {before_rec.type.value} -> {after.type.value} ({why})"

        return await self._locked(p, work)


async def mark_interrupted_workflows(
    store: Any,
    *,
    grace_s: float,
    locks: dict[str, LockInfo],
    pending: list[float] | None = None,
) -> list[str]:
    """Workflow records left `running` by a holder that is gone: no lock on their shard is held
    for them. Marked `interrupted` (compare-and-swap), so nobody waits for them and the shard's
    next analysis repairs what they left.

    A workflow still waiting for its lock also looks like this; the grace period (longer than a
    lock lease) spares the normal waits, and a workflow wrongly marked rewrites its own record on
    its next step (see `workflows.run`).

    `pending`, if given, receives the time (epoch seconds) at which each record that is not
    marked only because it is too recent can be judged, if nothing locks its shard at all (the
    likely remains of a holder that died a moment ago), so the caller can look again then."""
    marked = []
    now = time.time()
    for rec in await store.list_workflows():
        if rec.status != WorkflowStatus.RUNNING:
            continue
        lock = locks.get(f"{rec.keyspace}/{rec.shard}")
        if now - rec.updated_at < grace_s:
            if pending is not None and lock is None:
                pending.append(rec.updated_at + grace_s)
            continue
        if lock is not None and lock.workflow_id == rec.id:
            continue
        changed = dataclasses.replace(
            rec, status=WorkflowStatus.INTERRUPTED, updated_at=now,
            error=rec.error or "interrupted: its orchestrator instance stopped while it ran "
            "(the shard lock was released); the shard is repaired by the health checks",
        )  # fmt: skip
        try:
            await store.update_workflow(changed)
        except (BadVersionError, TopoError):
            continue
        marked.append(rec.id)
    return marked
