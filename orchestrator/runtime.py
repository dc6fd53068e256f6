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
runs once 20,000 more tracked objects were allocated than freed, and the same run had no full
collection at all. Nothing is collected less than before except cyclic garbage, which waits
somewhat longer; memory is not measurably higher (objects are freed by reference counting as
before).

Where a collection falls matters as much as how often: each one stops every check in flight
for as long as it walks its generation. That count is net, so a check's results, which replace
the previous ones, hardly move it, while the young generation keeps every result of the last
interval and every long-lived object made since the last collection (at 5,000 tablets just
after start: 140,000 objects, 70-100 ms). The health checker therefore runs, at the end of
each cycle when its checks are done, the collection that the interpreter would soon start by
itself mid-cycle (`collect_between_cycles`): once the count is past half the young threshold,
the young generation, or the middle one when it is due. Full collections stay the
interpreter's (rare after start-up).
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Apply `GC_THRESHOLDS` (see the module docstring)."""
    gc.set_threshold(*GC_THRESHOLDS)


def collect_between_cycles() -> int | None:
    """Run now the young (or, when due, middle) collection that would otherwise start by
    itself within the next few thousand allocations; the generation collected, or ``None`` if
    none was near (see the module docstring). Nothing with the collector disabled."""
    if not gc.isenabled():
        return None
    count, threshold = gc.get_count(), gc.get_threshold()
    if count[0] < threshold[0] // 2:
        return None
    generation = 1 if count[1] >= threshold[1] else 0
    gc.collect(generation)
    return generation
