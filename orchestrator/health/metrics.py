"""The health checker's view of the service metrics (declared in `orchestrator.metrics`).

A thin adapter, so the checker and recovery code say what happened ("a probe took 3 ms", "a
recovery was blocked") without knowing label layouts. If the service metrics module lacks one of
them, that figure is simply not recorded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from orchestrator import metrics as _m
from orchestrator.health.analysis import Problem, TabletHealth
from topo.records import Tablet

_PROBE = getattr(_m, "HEALTH_CHECK_DURATION", None) or getattr(_m, "HEALTH_CHECK_SECONDS", None)
_FAILURES = getattr(_m, "HEALTH_CHECK_FAILURES", None)
_RECOVERIES = getattr(_m, "RECOVERIES", None)
_REPARENT = getattr(_m, "observe_reparent", None)
_SET_TABLETS = getattr(_m, "set_tablet_counts", None)
_last_counts: dict[tuple[str, str, str, bool], int] | None = None


def _labels(metric: Any, **values: str) -> Any:
    names = tuple(getattr(metric, "_labelnames", ()))
    if not names:
        return metric
    return metric.labels(**{n: values.get(n, "") for n in names})


# The probe histogram's child per (keyspace, shard): looked up once, not at every check (the
# labelled lookup costs about as much as the observation itself, thousands of times a second).
_probe_children: dict[tuple[str, str], Any] = {}


def observe_probe(tablet: Tablet, seconds: float, ok: bool) -> None:
    if _PROBE is not None:
        key = (tablet.keyspace, tablet.shard)
        child = _probe_children.get(key)
        if child is None:
            child = _probe_children[key] = _labels(_PROBE, keyspace=key[0], shard=key[1])
        child.observe(seconds)
    if not ok and _FAILURES is not None:
        _labels(_FAILURES, keyspace=tablet.keyspace, shard=tablet.shard).inc()


def snake(name: str) -> str:
    """`DeadPrimary` -> `dead_primary` (the label values the metrics document uses)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def count_recovery(problem: Problem, action: str, result: str) -> None:
    if _RECOVERIES is not None:
        _labels(_RECOVERIES, analysis=snake(problem.kind.value), problem=problem.kind.value,
                action=action, result=result).inc()  # fmt: skip


def observe_reparent(action: str, succeeded: bool, seconds: float, *, changed: bool = True) -> None:
    if _REPARENT is not None:
        _REPARENT(action, succeeded, seconds, changed=changed)


def set_health_gauges(
    tablets: Iterable[Tablet],
    health: dict[str, TabletHealth],
    problems: dict[str, list[Problem]],
    paused: dict[tuple[str, str], bool],
) -> None:
    """Per-tablet lag, per-shard problem counts and pause state, after each health cycle."""
    lags: dict[tuple[str, str, str, str], float] = {}
    for t in tablets:
        h = health.get(t.alias)
        repl = h.status.replication if h is not None and h.status is not None else None
        if repl is not None and repl.lag_seconds is not None:
            lags[(t.keyspace, t.shard, t.alias, t.type.value)] = float(repl.lag_seconds)
    counts: dict[tuple[str, str, str], int] = {}
    for found in problems.values():
        for p in found:
            key = (p.keyspace, p.shard, p.kind.value)
            counts[key] = counts.get(key, 0) + 1
    _m.set_tablet_lag(lags)
    _m.set_shard_problems(counts)
    _m.set_recovery_paused(paused)


def set_tablets(tablets: Iterable[Tablet], health: dict[str, TabletHealth]) -> None:
    """Tablets by keyspace, shard, type and health (unchecked tablets count as unhealthy)."""
    if _SET_TABLETS is None:
        return
    global _last_counts
    counts: dict[tuple[str, str, str, bool], int] = {}
    for t in tablets:
        h = health.get(t.alias)
        key = (t.keyspace, t.shard, t.type.value, bool(h is not None and h.healthy))
        counts[key] = counts.get(key, 0) + 1
    # Rewriting the gauge means one labelled series per shard and type, every cycle: skip it
    # when nothing changed since the last write (the gauge has no other writer).
    if counts != _last_counts:
        _SET_TABLETS(counts)
        _last_counts = counts
