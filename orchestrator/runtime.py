"""Process-wide settings of the long-running commands (`serve`, `worker`) and the benchmarks
that measure them.

Garbage collection. A health check's results (its `ServerStatus`, the tablet's `TabletHealth`,
the rows behind them) live about one interval, until the next check replaces them. With the
interpreter's default thresholds (a young collection every 700 allocations) they survive two
young collections within a fraction of a second and land in the oldest generation, so at a few
thousand checks a second the oldest generation fills with them and is collected in full every
two seconds or so: a walk over every long-lived object of the process (connections, topology
records, caches). Measured with `bench.healthcheck --tablets 2000` (2,000 checks a second):
13 full collections in 25 s, up to 133 ms each, 1.8 s of CPU in all, a fifth of the process's
CPU, and each a stall of every check in flight. With the thresholds below a young collection
runs every 20,000 allocations (about every 0.1 s at that rate), most results die young, and
the same run had no full collection at all. Nothing is collected less than before except cyclic
garbage, which waits somewhat longer; memory is not measurably higher (objects are freed by
reference counting as before).
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Apply `GC_THRESHOLDS` (see the module docstring)."""
    gc.set_threshold(*GC_THRESHOLDS)
