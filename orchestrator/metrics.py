"""Prometheus metrics of the orchestrator, in one dedicated registry served at `/metrics`.

Every metric the service exports is declared here, so this file is the list an operator reads
to build dashboards. Components import the objects and update them; topo/ never imports this
module: etcd latency reaches us through the `EtcdKV.on_call` hook (`observe_etcd`).

Label values stay bounded: actions and commands are fixed names, results are a few words, and
per-tablet figures are aggregated by keyspace, shard and type rather than labelled by alias,
except the replication lag, which an alert must be able to name a tablet by (one series per
tablet, removed with the tablet). Problems are counted per shard and kind, so a rule can page on
`orc_shard_problems{problem="DeadPrimary"} > 0` (examples: `compose/alerts.yml`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)

# Reparents of every kind (PRS, ERS, InitShardPrimary, TER, ReparentTablet), whether an operator,
# a webhook or an automatic recovery started them. result: "succeeded", "failed", or "noop" (a
# success that changed nothing: ERS on a healthy primary, PRS to the current primary).
REPARENT_TOTAL = Counter(
    "orc_reparent_total",
    "Reparent workflows run, by action and result.",
    ["action", "result"],
    registry=REGISTRY,
)
REPARENT_DURATION = Histogram(
    "orc_reparent_duration_seconds",
    "Wall-clock duration of reparent workflows, by action and result.",
    ["action", "result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)

# Health checks (orchestrator.health): one observation per tablet probe.
HEALTH_CHECK_DURATION = Histogram(
    "orc_health_check_duration_seconds",
    "Latency of one tablet health probe (successful or not).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
HEALTH_CHECK_FAILURES = Counter(
    "orc_health_check_failures_total",
    "Tablet health probes that failed (unreachable, timed out, error), by keyspace and shard.",
    ["keyspace", "shard"],
    registry=REGISTRY,
)
# Set with `set_tablet_counts` after each health cycle; healthy is "true" or "false".
TABLETS = Gauge(
    "orc_tablets",
    "Tablets by keyspace, shard, type and health as of the last health cycle.",
    ["keyspace", "shard", "type", "healthy"],
    registry=REGISTRY,
)
# Per tablet, from the last health check: replication lag (absent while unknown: not a replica,
# replication stopped, or the tablet does not answer).
TABLET_LAG = Gauge(
    "orc_tablet_replication_lag_seconds",
    "Replication lag of each replicating tablet as of the last health check.",
    ["keyspace", "shard", "alias", "type"],
    registry=REGISTRY,
)
# Per shard and problem kind (the analyses of orchestrator.health.analysis), every cycle.
SHARD_PROBLEMS = Gauge(
    "orc_shard_problems",
    "Problems found by the last health analysis, by keyspace, shard and problem kind.",
    ["keyspace", "shard", "problem"],
    registry=REGISTRY,
)
# 1 while automatic recovery of a shard is paused (SetRecoveries, keyspace auto_recovery, the
# recoveries_enabled setting), else 0.
RECOVERY_PAUSED = Gauge(
    "orc_recovery_paused",
    "1 if automatic recovery of the shard is paused (globally, for its keyspace or itself).",
    ["keyspace", "shard"],
    registry=REGISTRY,
)
RECOVERIES = Counter(
    "orc_recoveries_total",
    "Automatic recoveries, by analysis (dead_primary, replica_not_replicating...) and result "
    "(succeeded, failed, blocked).",
    ["analysis", "result"],
    registry=REGISTRY,
)

# Shard locks: how long workflows waited for them (observed from the lock_shard step).
LOCK_WAIT = Histogram(
    "orc_lock_wait_seconds",
    "Time spent waiting for a shard lock, by the action that wanted it.",
    ["action"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)

# etcd: every EtcdKV call (op is the first word of what it did: get, list, write, ...).
ETCD_OP_DURATION = Histogram(
    "orc_etcd_operation_duration_seconds",
    "Latency of etcd operations, by operation and result (ok, error).",
    ["op", "result"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
    registry=REGISTRY,
)

# Events (orchestrator.events): outbox depth as this instance sees it, and deliveries.
OUTBOX_DEPTH = Gauge(
    "orc_outbox_depth",
    "Events in the etcd outbox not yet acknowledged by every webhook URL.",
    registry=REGISTRY,
)
WEBHOOK_DELIVERIES = Counter(
    "orc_webhook_deliveries_total",
    "Outgoing webhook delivery attempts, by result (delivered, failed).",
    ["result"],
    registry=REGISTRY,
)

# Sharding DDL locks (set by the leader's keeper after every pass).
DDL_LOCKS = Gauge(
    "orc_ddl_locks",
    "Sharding DDL locks now, by state (waiting, executing, resuming, error).",
    ["state"],
    registry=REGISTRY,
)
DDL_LOCK_OLDEST_S = Gauge(
    "orc_ddl_lock_oldest_seconds",
    "How long the oldest sharding DDL lock has existed (0: none).",
    registry=REGISTRY,
)
DDL_LOCK_WAIT = Histogram(
    "orc_ddl_lock_wait_seconds",
    "Time from a sharding DDL lock's creation to its resolution.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
    registry=REGISTRY,
)

# Leader election: 1 while this instance is the leader (refreshed at every scrape).
LEADER = Gauge(
    "orc_leader",
    "1 if this orchestrator instance is the leader (runs recoveries, delivers events), else 0.",
    registry=REGISTRY,
)

# HTTP API and commands.
HTTP_REQUESTS = Counter(
    "orc_http_requests_total",
    "HTTP requests served, by route template, method and status code.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "orc_http_request_duration_seconds",
    "HTTP request latency (until the handler returned; streams until they ended), by route.",
    ["route", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
    registry=REGISTRY,
)
COMMANDS = Counter(
    "orc_commands_total",
    "Commands run through the API, by command and result (succeeded, or the error code).",
    ["command", "result"],
    registry=REGISTRY,
)


def observe_etcd(what: str, seconds: float, ok: bool) -> None:
    """The `EtcdKV.on_call` hook: `what` is the call's description ("get /vt/...")."""
    op = what.split(" ", 1)[0] or "other"
    ETCD_OP_DURATION.labels(op, "ok" if ok else "error").observe(seconds)


_series: dict[Gauge, set[tuple[str, ...]]] = {}  # the label sets each replaced gauge holds


def _replace_series(gauge: Gauge, values: Mapping[Any, float]) -> None:
    """Make `gauge` hold exactly these series. Series that are gone are removed (a tablet or
    shard that disappeared must not linger as a stale series); the others are set in place.
    Clearing the gauge and adding every series again, each health cycle, would build a child
    object per tablet per second."""
    held = _series.get(gauge, set())
    for labels in held - values.keys():
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
    for labels, value in values.items():
        gauge.labels(*labels).set(value)
    _series[gauge] = set(values)


def set_tablet_counts(counts: Mapping[tuple[str, str, str, bool], int]) -> None:
    """Replace the tablet gauge with `{(keyspace, shard, type, healthy): count}`."""
    _replace_series(
        TABLETS,
        {(ks, shard, type_, "true" if healthy else "false"): n
         for (ks, shard, type_, healthy), n in counts.items()},
    )  # fmt: skip


def set_tablet_lag(lags: Mapping[tuple[str, str, str, str], float]) -> None:
    """Replace the lag gauge with `{(keyspace, shard, alias, type): seconds}`."""
    _replace_series(TABLET_LAG, lags)


def set_shard_problems(counts: Mapping[tuple[str, str, str], int]) -> None:
    """Replace the problems gauge with `{(keyspace, shard, problem): count}`."""
    _replace_series(SHARD_PROBLEMS, counts)


def set_recovery_paused(paused: Mapping[tuple[str, str], bool]) -> None:
    _replace_series(RECOVERY_PAUSED, {k: 1 if v else 0 for k, v in paused.items()})


def observe_reparent(action: str, succeeded: bool, seconds: float, *, changed: bool = True) -> None:
    """One reparent: succeeded, failed, or noop (succeeded without changing anything)."""
    result = ("succeeded" if changed else "noop") if succeeded else "failed"
    REPARENT_TOTAL.labels(action, result).inc()
    REPARENT_DURATION.labels(action, result).observe(seconds)


def lock_wait_observer(
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[dict[str, Any]], None]:
    """A workflow progress callback that records the lock wait (the `lock_shard` step), then
    passes every event on to `progress`."""

    started: dict[str, float] = {}

    def observe(event: dict[str, Any]) -> None:
        if event.get("step") == "lock_shard":
            wf = str(event.get("workflow_id", ""))
            if event.get("status") == "running":
                started[wf] = float(event.get("t") or time.time())
            elif wf in started:
                waited = float(event.get("t") or time.time()) - started.pop(wf)
                LOCK_WAIT.labels(str(event.get("action", ""))).observe(max(waited, 0.0))
        if progress is not None:
            progress(event)

    return observe


def exposition() -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
