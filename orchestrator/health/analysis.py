"""Health analyses: tablet records and their latest health checks in, a list of problems out.

A pure function, so every decision can be tested without a server (the vtorc idea: analysis is
separate from recovery). `analyze()` looks at one shard and answers "what is wrong here?"; what
to do about each problem is `orchestrator.health.recovery`'s business.

The analyses, in the order they matter:

- ShardLocked: a workflow holds the shard lock; its tablets are in flux, nothing is analysed.
- Primary problems (the tablet named by the Shard record):
  - DeadPrimary: the primary does not answer AND the replicas confirm it: every reachable tablet
    that replicates from it has lost it (IO thread not running, typically "Connecting"). If any
    replica still has a running IO thread to it, the primary is alive and only the orchestrator
    cannot reach it: PrimaryUnreachableFromOrchestrator, which triggers nothing. Without a
    reachable replica there is nothing to confirm with or to fail over to:
    DeadPrimaryWithoutReplicas, report only.
  - PrimaryNotServing: the Shard record says the primary is not serving but no workflow holds
    the lock: a planned reparent died between taking the primary out of service and finishing.
    If no other tablet took writes meanwhile, undo it (primary writable and serving again, as
    PRS's own undo does). If another tablet is writable, the reparent got as far as promoting:
    InterruptedReparent. The recovery does not guess which server is the truth: it resumes the
    workflow that was interrupted, from its own record; with no such record it only reports.
  - PrimaryReadOnly: topology says primary and serving, MySQL says read_only=ON, no other
    tablet is writable: make it writable.
  - PrimaryReplicating: the primary itself replicates from somewhere: report only. But if it
    replicates from a writable tablet of its shard that replicates from nobody, the primary
    was moved and the topology not told (an outside tool that has not called
    TabletExternallyReparented yet, or one interrupted): InterruptedReparent, and that tablet
    is not fenced (fencing it would leave the shard with no writable server).
- Tablet problems (every other tablet):
  - ReplicaWritable: any non-primary tablet (spare and drained too) with read_only OFF: writes
    there become errant transactions, or a second primary. Set read-only.
  - ReplicaNotReplicating / ReplicaWrongSource: a replica or rdonly tablet with no replication
    configured, or configured to another server than the shard primary -> ReparentTablet.
  - ReplicationStopped: configured to the right source, a thread stopped without an error
    (someone ran STOP SLAVE, or a reparent died after stopping IO threads) -> StartReplication.
  - ReplicationError: a thread stopped with an error. Report only: ReparentTablet would only
    restart into the same error (a broken relay log, a duplicate key, a purged binlog), and
    skipping transactions is a human's decision.
  - ErrantTransactions: the replica has transactions its primary never had. Report only.
  - UnhealthyTablet: a replica or rdonly tablet failing `unhealthy_checks` checks in a row ->
    type spare (keeping its type in target_type), so it leaves the serving graph.
  - SpareTabletHealthy: a spare tablet with a target_type answers again -> back to that type
    (an old primary made spare by a failover has target type replica; the recovery first checks
    that it holds no transaction the primary lacks, then the replication analyses repoint it).
  - NeedsRebuild: a spare tablet that came back with transactions the shard never had (errant
    GTIDs, found by that check and kept in its `needs_rebuild` tag). Report only: its data must
    be rebuilt, never silently rejoined.
- Reported, never repaired (so that the health page is honest about what does not serve):
  - TabletUnreachable: a tablet that does not answer its checks (until UnhealthyTablet applies
    to it; a spare or drained tablet stays unreachable).
  - TabletInSpare: a spare tablet that is not on its way back (it does not answer, or has no
    target type): it serves nothing.
  - ReplicationStoppedByOperator: replication stopped by StopReplication, left stopped until
    StartReplication.
  - ReplicaLagging: a replica whose lag is over `max_lag_s`.
  - TabletInMaintenance: a tablet under a maintenance window (BeginMaintenance): its problems
    are still reported, but nothing recovers it until the window ends or expires.
  - ShardHasNoServingReplica: the primary works but no `replica` tablet answers and replicates
    from it (reads have nowhere to go, and a failover would have no candidate).
  - ShardHasNoPrimary: the Shard record names no primary (with or without tablets).

Replication problems are only judged while the primary answers: with the primary gone, every
replica looks broken and the one fix that matters is the failover.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mysqlctl.client import ServerStatus
from topo.records import LockInfo, Shard, Tablet, TabletType
from workflows.common import active_maintenance
from workflows.replication import NEEDS_REBUILD_TAG, STOPPED_BY_OPERATOR_TAG

# Tablets that replicate from the primary and whose replication the health checks maintain.
REPLICATING_TYPES = frozenset({TabletType.REPLICA, TabletType.RDONLY})


class ProblemKind(enum.StrEnum):
    SHARD_LOCKED = "ShardLocked"
    NO_PRIMARY = "ShardHasNoPrimary"
    DEAD_PRIMARY = "DeadPrimary"
    DEAD_PRIMARY_WITHOUT_REPLICAS = "DeadPrimaryWithoutReplicas"
    PRIMARY_UNREACHABLE = "PrimaryUnreachableFromOrchestrator"
    PRIMARY_NOT_SERVING = "PrimaryNotServing"
    INTERRUPTED_REPARENT = "InterruptedReparent"
    PRIMARY_READ_ONLY = "PrimaryReadOnly"
    PRIMARY_REPLICATING = "PrimaryReplicating"
    REPLICA_WRITABLE = "ReplicaWritable"
    REPLICA_NOT_REPLICATING = "ReplicaNotReplicating"
    REPLICA_WRONG_SOURCE = "ReplicaWrongSource"
    REPLICATION_STOPPED = "ReplicationStopped"
    REPLICATION_ERROR = "ReplicationError"
    ERRANT_TRANSACTIONS = "ErrantTransactions"
    UNHEALTHY_TABLET = "UnhealthyTablet"
    SPARE_TABLET_HEALTHY = "SpareTabletHealthy"
    NEEDS_REBUILD = "NeedsRebuild"
    TABLET_UNREACHABLE = "TabletUnreachable"
    TABLET_SPARE = "TabletInSpare"
    REPLICATION_STOPPED_BY_OPERATOR = "ReplicationStoppedByOperator"
    REPLICA_LAGGING = "ReplicaLagging"
    TABLET_IN_MAINTENANCE = "TabletInMaintenance"
    NO_SERVING_REPLICA = "ShardHasNoServingReplica"


@dataclass(frozen=True, slots=True)
class TabletHealth:
    """The latest health check of one tablet: its status if it answered, else why not."""

    alias: str
    status: ServerStatus | None = None
    error: str | None = None
    checked_at: float = 0.0
    consecutive_failures: int = 0
    # When the tablet last answered a check (epoch seconds; 0: never, as far as we know).
    last_healthy_at: float = 0.0

    @property
    def healthy(self) -> bool:
        return self.status is not None


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    keyspace: str
    shard: str
    tablet: str | None
    detail: str

    def describe(self) -> str:
        where = f" {self.tablet}" if self.tablet else ""
        return f"{self.kind.value}{where} ({self.detail})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "keyspace": self.keyspace,
            "shard": self.shard,
            "tablet": self.tablet,
            "detail": self.detail,
        }


def analyze(
    shard: Shard,
    tablets: Sequence[Tablet],
    statuses: Mapping[str, TabletHealth],
    *,
    lock: LockInfo | None = None,
    unhealthy_checks: int = 3,
    max_lag_s: float | None = None,
    now: float | None = None,
) -> list[Problem]:
    """Every problem of one shard, primary problems first, shard-wide reports last.

    `tablets` may include other shards' tablets (they are ignored). A tablet without an entry in
    `statuses` has not been checked yet and is neither healthy nor failing. `now` (epoch
    seconds) decides which maintenance windows are still open.
    """
    ks, name = shard.keyspace, shard.name

    def problem(kind: ProblemKind, tablet: str | None, detail: str) -> Problem:
        return Problem(kind, ks, name, tablet, detail)

    if lock is not None:
        return [problem(ProblemKind.SHARD_LOCKED, None, f"locked by {lock.describe()}, skipped")]
    mine = [t for t in tablets if t.keyspace == ks and t.shard == name]
    primary = next((t for t in mine if t.alias == shard.primary_alias), None)
    others = [t for t in mine if primary is None or t.alias != primary.alias]
    out: list[Problem] = []

    # -- the primary -------------------------------------------------------------------------
    primary_ok = False  # the primary answers and acts as one: replication can be judged
    suppress_writable = False
    for t in mine:
        window = active_maintenance(t, now)
        if window is not None:
            out.append(problem(ProblemKind.TABLET_IN_MAINTENANCE, t.alias, window.describe(now)))
    if shard.primary_alias is None:
        what = "run InitShardPrimary" if mine else "the shard has no tablet either"
        out.append(problem(ProblemKind.NO_PRIMARY, None, f"no primary: {what}"))
    elif primary is None:
        out.append(
            problem(
                ProblemKind.NO_PRIMARY,
                shard.primary_alias,
                "the Shard record names a primary that has no tablet record",
            )
        )
    else:
        health = statuses.get(primary.alias)
        if health is not None and health.status is None:
            out.append(_unreachable_primary(problem, primary, health, others, statuses))
        elif health is not None and health.status is not None:
            status = health.status
            writable_others = [
                t.alias for t in others if (s := _status(statuses, t)) and not s.read_only
            ]
            repl = status.replication
            moved_to = _moved_to(repl, others, statuses)
            if moved_to is not None:
                # The primary already replicates from a writable tablet of its shard that
                # replicates from nobody: the primary was moved (an external tool, or a
                # reparent interrupted after repointing it) and the topology not told yet.
                # Fencing that tablet would leave the shard without a writable server.
                suppress_writable = True
                out.append(
                    problem(
                        ProblemKind.INTERRUPTED_REPARENT,
                        primary.alias,
                        f"the primary replicates from {moved_to}, which is writable and "
                        "replicates from nobody: the primary was moved and the topology not "
                        f"updated (TabletExternallyReparented {moved_to} reports it)",
                    )
                )
            elif repl is not None and (repl.io_running or repl.sql_running):
                out.append(
                    problem(
                        ProblemKind.PRIMARY_REPLICATING,
                        primary.alias,
                        f"the primary replicates from {repl.source_host}:{repl.source_port}",
                    )
                )
            elif not shard.is_primary_serving:
                if writable_others:
                    suppress_writable = True
                    out.append(
                        problem(
                            ProblemKind.INTERRUPTED_REPARENT,
                            primary.alias,
                            f"primary not serving{' and read-only' if status.read_only else ''}"
                            f" while {', '.join(writable_others)} is writable: a reparent was"
                            " interrupted",
                        )
                    )
                else:
                    out.append(
                        problem(
                            ProblemKind.PRIMARY_NOT_SERVING,
                            primary.alias,
                            "the Shard record says not serving and no workflow holds the lock"
                            + (" (read-only)" if status.read_only else ""),
                        )
                    )
            elif status.read_only and not writable_others:
                out.append(problem(ProblemKind.PRIMARY_READ_ONLY, primary.alias, "read_only=ON"))
            else:
                primary_ok = not status.read_only

    # -- every other tablet --------------------------------------------------------------------
    serving_replicas: list[str] = []  # `replica` tablets that answer and replicate, no error
    for t in others:
        health = statuses.get(t.alias)
        if health is None:
            continue
        tstatus = health.status
        if tstatus is None:
            failures = f"{health.consecutive_failures} failed check(s) in a row: {health.error}"
            if t.type in REPLICATING_TYPES and health.consecutive_failures >= unhealthy_checks:
                out.append(problem(ProblemKind.UNHEALTHY_TABLET, t.alias, failures))
            else:
                out.append(problem(ProblemKind.TABLET_UNREACHABLE, t.alias, failures))
            if t.type == TabletType.SPARE and not t.tags.get(NEEDS_REBUILD_TAG):
                out.append(problem(ProblemKind.TABLET_SPARE, t.alias, _spare_detail(t)))
            continue
        if t.type == TabletType.SPARE and t.tags.get(NEEDS_REBUILD_TAG):
            detail = f"needs rebuild: {t.tags[NEEDS_REBUILD_TAG]}"
            out.append(problem(ProblemKind.NEEDS_REBUILD, t.alias, detail))
        elif t.type == TabletType.SPARE and t.target_type not in (None, TabletType.SPARE):
            assert t.target_type is not None
            out.append(
                problem(
                    ProblemKind.SPARE_TABLET_HEALTHY,
                    t.alias,
                    f"answers again; back to {t.target_type.value}",
                )
            )
        elif t.type == TabletType.SPARE:
            out.append(problem(ProblemKind.TABLET_SPARE, t.alias, _spare_detail(t)))
        if not tstatus.read_only and not suppress_writable:
            out.append(
                problem(ProblemKind.REPLICA_WRITABLE, t.alias, f"{t.type.value} with read_only=OFF")
            )
        if primary is None or not primary_ok or t.type not in REPLICATING_TYPES:
            continue
        found = _replication_problem(t, tstatus, primary)
        if found is not None:
            out.append(problem(found[0], t.alias, found[1]))
        elif t.type == TabletType.REPLICA:
            serving_replicas.append(t.alias)
        lag = tstatus.replication.lag_seconds if tstatus.replication is not None else None
        if max_lag_s is not None and lag is not None and lag > max_lag_s:
            out.append(
                problem(
                    ProblemKind.REPLICA_LAGGING, t.alias,
                    f"{lag:g}s behind the primary (threshold {max_lag_s:g}s)",
                )
            )  # fmt: skip
        if not tstatus.errant.is_empty():
            out.append(
                problem(
                    ProblemKind.ERRANT_TRANSACTIONS,
                    t.alias,
                    f"transactions the primary never had: {tstatus.errant.encode()}",
                )
            )

    # -- the shard as a whole ------------------------------------------------------------------
    if primary_ok and not serving_replicas:
        replicas = [t.alias for t in others if t.type == TabletType.REPLICA]
        out.append(
            problem(
                ProblemKind.NO_SERVING_REPLICA,
                None,
                "no replica answers and replicates from the primary "
                + (f"(replicas: {', '.join(replicas)})" if replicas else "(no replica tablet)")
                + ": reads have nowhere to go and a failover has no candidate",
            )
        )
    return out


def _spare_detail(t: Tablet) -> str:
    if t.target_type not in (None, TabletType.SPARE) and t.target_type is not None:
        return f"spare, serves nothing; returns to {t.target_type.value} once it answers"
    return "spare, serves nothing; ChangeTabletType puts it back"


def _status(statuses: Mapping[str, TabletHealth], t: Tablet) -> ServerStatus | None:
    health = statuses.get(t.alias)
    return health.status if health is not None else None


def _unreachable_primary(
    problem: Any,
    primary: Tablet,
    health: TabletHealth,
    others: Sequence[Tablet],
    statuses: Mapping[str, TabletHealth],
) -> Problem:
    """DeadPrimary only when the replicas confirm it: the orchestrator alone is not a witness."""
    reachable = [(t, s) for t in others if (s := _status(statuses, t)) is not None]
    of_primary = [
        (t, s.replication)
        for t, s in reachable
        if s.replication is not None and _same_source(s.replication, primary)
    ]
    connected = [t.alias for t, r in of_primary if r.io_running]
    why = health.error or "no answer"
    if connected:
        return problem(
            ProblemKind.PRIMARY_UNREACHABLE,
            primary.alias,
            f"{why}; but {', '.join(connected)} still replicate from it: a partition between "
            "the orchestrator and the primary, not a dead primary",
        )
    if not reachable:
        what = "no other tablet answers" if others else "the shard has no replica"
        return problem(
            ProblemKind.DEAD_PRIMARY_WITHOUT_REPLICAS,
            primary.alias,
            f"{why}; {what}: nothing to confirm with or fail over to",
        )
    if not of_primary:
        return problem(
            ProblemKind.PRIMARY_UNREACHABLE,
            primary.alias,
            f"{why}; no reachable tablet replicates from it, so nothing confirms it is dead",
        )
    lost = ", ".join(
        f"{t.alias} (io {r.io_state}{': ' + r.last_io_error if r.last_io_error else ''})"
        for t, r in of_primary
    )
    return problem(
        ProblemKind.DEAD_PRIMARY, primary.alias, f"{why}; its replicas lost it too: {lost}"
    )


def _moved_to(
    repl: Any, others: Sequence[Tablet], statuses: Mapping[str, TabletHealth]
) -> str | None:
    """The tablet the primary replicates from, if it is in the shard, writable and itself
    replicates from nobody (it acts as the primary)."""
    if repl is None or not (repl.io_running or repl.sql_running):
        return None
    for t in others:
        if _same_source(repl, t):
            s = _status(statuses, t)
            if s is None or s.read_only:
                return None
            r = s.replication
            return t.alias if r is None or not (r.io_running or r.sql_running) else None
    return None


def _same_source(repl: Any, primary: Tablet) -> bool:
    return (repl.source_host, repl.source_port) == (primary.mysql_host, primary.mysql_port)


def _replication_problem(
    t: Tablet, status: ServerStatus, primary: Tablet
) -> tuple[ProblemKind, str] | None:
    repl = status.replication
    if repl is None or not repl.source_host:
        return ProblemKind.REPLICA_NOT_REPLICATING, "replication is not configured"
    if not _same_source(repl, primary):
        return (
            ProblemKind.REPLICA_WRONG_SOURCE,
            f"replicates from {repl.source_host}:{repl.source_port}, the primary is "
            f"{primary.alias} at {primary.address}",
        )
    errors = []
    if not repl.io_running and repl.last_io_error:
        errors.append(f"IO: {repl.last_io_error}")
    if not repl.sql_running and repl.last_sql_error:
        errors.append(f"SQL: {repl.last_sql_error}")
    if errors:
        return ProblemKind.REPLICATION_ERROR, "; ".join(errors)
    stopped = [n for n, running in (("IO", repl.io_state != "No"), ("SQL", repl.sql_running))
               if not running]  # fmt: skip
    if stopped and t.tags.get(STOPPED_BY_OPERATOR_TAG):
        # An operator ran StopReplication: reported, left stopped until StartReplication.
        return (
            ProblemKind.REPLICATION_STOPPED_BY_OPERATOR,
            f"{' and '.join(stopped)} thread stopped by {t.tags[STOPPED_BY_OPERATOR_TAG]}; "
            "StartReplication restarts it",
        )
    if stopped:
        return ProblemKind.REPLICATION_STOPPED, f"{' and '.join(stopped)} thread stopped, no error"
    return None
