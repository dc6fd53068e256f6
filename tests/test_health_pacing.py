"""Pacing of the health cycle (issue 13): a large fleet's shard passes start spread over part of
the interval, a small one's at once, and a stall of the loop shifts the rest rather than
bursting; the collector runs between cycles; and the per-cycle gauges keep their series in
place."""

from __future__ import annotations

import asyncio
import gc
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from orchestrator import metrics
from orchestrator.health.checker import PACING_PER_CHECK_S, HealthChecker, pacing_window
from orchestrator.runtime import collect_between_cycles
from orchestrator.settings import Settings


def test_pacing_window_grows_with_the_fleet_up_to_the_spread() -> None:
    assert pacing_window(3, 1.0, 0.8) == pytest.approx(3 * PACING_PER_CHECK_S)
    assert pacing_window(500, 1.0, 0.8) == pytest.approx(0.5)
    assert pacing_window(2000, 1.0, 0.8) == pytest.approx(0.8)  # 2,500 starts a second
    assert pacing_window(2000, 2.0, 0.8) == pytest.approx(1.6)
    assert pacing_window(5000, 1.0, 0.0) == 0.0


async def test_passes_start_spread_over_the_window_and_all_finish() -> None:
    settings = Settings(etcd_endpoints=("127.0.0.1:2379",), health_interval_s=1.0,
                        health_spread=0.8)  # fmt: skip
    checker = cast(HealthChecker, SimpleNamespace(settings=settings))
    loop = asyncio.get_running_loop()
    started: list[float] = []
    finished: list[int] = []

    def job(i: int) -> Any:
        async def run() -> None:
            started.append(loop.time())
            await asyncio.sleep(0.01)
            finished.append(i)

        return run

    t0 = loop.time()
    passes = [job(i) for i in range(100)]
    await HealthChecker._check_shards(checker, passes, tablets=500)  # window 0.5 s
    took = loop.time() - t0
    assert sorted(finished) == list(range(100))
    offsets = [s - t0 for s in started]
    assert offsets[0] < 0.05 and 0.45 < offsets[-1] < 0.6, offsets
    assert 0.2 < offsets[50] < 0.32, offsets  # evenly, not in a burst at either end
    assert took < 0.7

    started.clear()
    t0 = loop.time()
    await HealthChecker._check_shards(checker, [job(i) for i in range(2)], tablets=6)
    assert max(s - t0 for s in started) < 0.02  # a small fleet is checked at once


async def test_a_stalled_loop_shifts_the_remaining_starts_instead_of_bursting() -> None:
    """A pass that blocks the event loop for 150 ms (as a garbage collection does): the ~30
    passes that fell due meanwhile are not started at once; the schedule moves back."""
    settings = Settings(etcd_endpoints=("127.0.0.1:2379",), health_interval_s=1.0,
                        health_spread=0.8)  # fmt: skip
    checker = cast(HealthChecker, SimpleNamespace(settings=settings))
    loop = asyncio.get_running_loop()
    started: list[float] = []

    def job(i: int) -> Any:
        async def run() -> None:
            started.append(loop.time())
            if i == 20:
                time.sleep(0.15)  # blocks the loop

        return run

    t0 = loop.time()
    await HealthChecker._check_shards(checker, [job(i) for i in range(100)], tablets=500)
    took = loop.time() - t0
    assert len(started) == 100
    resumed = started[21]
    burst = sum(1 for s in started[21:] if s - resumed < 0.01)
    assert burst <= 4, [round(s - t0, 3) for s in started]  # without the shift: ~30
    assert 0.13 <= checker.last_stalls_ms / 1000 <= 0.3, checker.last_stalls_ms
    assert 0.6 < took < 0.9  # the window (0.5 s) plus the stall


def test_collect_between_cycles_runs_the_collection_that_is_near() -> None:
    thresholds = gc.get_threshold()
    try:
        gc.set_threshold(1000, 20, 20)
        gc.collect()
        assert collect_between_cycles() is None  # nothing near
        kept = [[] for _ in range(600)]  # past half the young threshold
        assert collect_between_cycles() == 0
        assert gc.get_count()[0] < 100
        for _ in range(20):
            gc.collect(0)  # each counts toward the middle generation
        kept += [[] for _ in range(600)]
        assert collect_between_cycles() == 1
        assert gc.get_count()[1] == 0
        gc.disable()
        kept += [[] for _ in range(600)]
        assert collect_between_cycles() is None
        assert len(kept) == 1800
    finally:
        gc.enable()
        gc.set_threshold(*thresholds)


def test_spread_must_be_a_fraction() -> None:
    from orchestrator.settings import SettingsError

    for bad in (-0.1, 1.0, 2.0):
        with pytest.raises(SettingsError, match="health_spread"):
            Settings(etcd_endpoints=("127.0.0.1:2379",), health_spread=bad)


def _lag(alias: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(
        "orc_tablet_replication_lag_seconds",
        {"keyspace": "pace", "shard": "0", "alias": alias, "type": "replica"},
    )


def test_gauges_are_replaced_in_place_and_gone_series_removed() -> None:
    metrics.set_tablet_lag({("pace", "0", "zone1-1", "replica"): 1.0,
                            ("pace", "0", "zone1-2", "replica"): 2.0})  # fmt: skip
    child = metrics.TABLET_LAG.labels("pace", "0", "zone1-1", "replica")
    metrics.set_tablet_lag({("pace", "0", "zone1-1", "replica"): 5.0})
    assert _lag("zone1-1") == 5.0
    assert _lag("zone1-2") is None  # gone: no stale series
    assert metrics.TABLET_LAG.labels("pace", "0", "zone1-1", "replica") is child  # kept
    metrics.set_tablet_lag({})
    assert _lag("zone1-1") is None
