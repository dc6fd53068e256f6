"""Shared bits of the benchmarks: percentiles, printing a summary, writing JSON, and running
a benchmark so that it never leaves a server behind (`run_main`, `sweep`)."""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from orchestrator.runtime import tune_gc


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 3),
        "p99": round(percentile(ms, 99), 3),
        "max": round(max(ms), 3) if ms else 0.0,
        "mean": round(statistics.fmean(ms), 3) if ms else 0.0,
    }


def write_json(path: str | None, doc: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(doc, indent=2))


def run_main(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run(main)`, with SIGTERM and SIGHUP cancelling it like Ctrl-C does, so the
    benchmark's `finally` blocks stop its servers whichever way it is ended."""

    async def guarded() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, task.cancel)
        await main

    tune_gc()  # as `orchestrator serve` and `worker` run
    try:
        asyncio.run(guarded())
    except asyncio.CancelledError:
        raise SystemExit(143) from None


async def sweep(directory: str | Path) -> None:
    """Stop every server process (mariadbd, etcd) still using `directory`: the last line of
    defence against one that a benchmark restarted and then lost track of."""
    from orchestrator.local import procs

    found = [p for p in procs.using_dir(Path(directory)) if p.name in ("mariadbd", "etcd")]
    if found:
        print(f"stopping {len(found)} server(s) left in {directory}", flush=True)
        await procs.stop_pids([p.pid for p in found], 10)
