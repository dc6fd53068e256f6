"""Binding subtasks to workers (run by the service leader).

Every (task, source) of every task is bound to one live worker. A binding whose worker is gone
(its lease expired: the key vanished) is rebound to the least loaded live worker, with epoch + 1,
as a compare-and-swap: two leaders for a moment cannot both rebind it, and the downstream
checkpoint fences the old worker even if it is still running somewhere. Bindings of a task that
no longer exists are removed. A draining worker keeps what it has until it releases it, but gets
nothing new.

The decision is a pure function (`plan`), tested without servers; `Scheduler.run` applies it on
every change under the migration prefix (a watch, not a polling loop), plus a slow periodic pass
as a safety net.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import structlog

from migration.aio import cancel_and_wait
from migration.faults import FaultPoints
from migration.shardddl import DdlLockStore, Keeper
from migration.store import Binding, MigrationStore, TaskRecord, WorkerRecord
from topo.errors import BadVersionError, NodeExistsError, TopoError

log = structlog.get_logger(__name__)

SAFETY_PASS_S = 2.0


@dataclass(frozen=True)
class Rebind:
    task: str
    source: str
    worker: str
    current: Binding | None

    def describe(self) -> str:
        was = f"from {self.current.worker} (epoch {self.current.epoch})" if self.current else "new"
        return f"{self.task}/{self.source} -> {self.worker} ({was})"


def plan(
    tasks: list[TaskRecord], workers: list[WorkerRecord], bindings: list[Binding]
) -> tuple[list[Rebind], list[Binding]]:
    """(bindings to make, bindings to remove)."""
    alive = {w.name for w in workers}
    takers = sorted(w.name for w in workers if not w.draining)
    by_key = {(b.task, b.source): b for b in bindings}
    load: Counter[str] = Counter(b.worker for b in bindings if b.worker in alive)
    wanted = {(t.name, s) for t in tasks for s in t.source_ids()}
    make: list[Rebind] = []
    for t in tasks:
        for source in t.source_ids():
            current = by_key.get((t.name, source))
            if current is not None and current.worker in alive:
                continue
            if not takers:
                continue
            worker = min(takers, key=lambda w: (load[w], w))
            load[worker] += 1
            make.append(Rebind(t.name, source, worker, current))
    remove = [b for k, b in by_key.items() if k not in wanted]
    return make, remove


class Scheduler:
    """Bindings and, as DM's master does, the sharding DDL locks (`Keeper`)."""

    def __init__(self, mstore: MigrationStore, faults: FaultPoints | None = None) -> None:
        self.mstore = mstore
        self.keeper = Keeper(DdlLockStore(mstore), faults or FaultPoints())

    async def reconcile(self) -> list[str]:
        """One pass; returns what it did, one line each."""
        m = self.mstore
        tasks, workers, bindings = await asyncio.gather(
            m.list_tasks(), m.list_workers(), m.list_bindings()
        )
        make, remove = plan(tasks, workers, bindings)
        done: list[str] = []
        for r in make:
            try:
                b = await m.bind(r.task, r.source, r.worker, r.current)
            except (BadVersionError, NodeExistsError):
                continue  # someone rebound it meanwhile; the next pass sees the new state
            done.append(f"bound {r.describe()} epoch {b.epoch}")
        for b in remove:
            await m.unbind(b)
            done.append(f"unbound {b.task}/{b.source} (task gone)")
        done += await self.keeper.reconcile({t.name: t for t in tasks})
        for line in done:
            log.info("migration scheduling", action=line)
        return done

    async def run(self) -> None:
        """Reconcile on every change, until cancelled. A watch lives across the passes, from
        the revision before the first: a change made while a pass runs (a subtask marking
        itself resumed, say) wakes the next pass at once, and no pass waits for a new watch to
        be set up (tens of ms each). After a quiet safety period the watch is set up again."""
        while True:
            try:
                start = await self.mstore.revision() + 1
                changed = asyncio.Event()
                changed.set()
                watcher = asyncio.create_task(self._follow(start, changed), name="scheduler watch")
                try:
                    while True:
                        try:
                            async with asyncio.timeout(SAFETY_PASS_S):
                                await changed.wait()
                        except TimeoutError:
                            break  # the safety pass, on a new watch
                        changed.clear()
                        await self.reconcile()
                        if watcher.done():
                            watcher.result()  # its etcd error: start over
                            break
                finally:
                    await cancel_and_wait(watcher)
            except asyncio.CancelledError:
                raise
            except TopoError as e:
                log.warning("migration scheduler: etcd trouble, retrying", error=str(e))
                await asyncio.sleep(1.0)

    async def _follow(self, start: int, changed: asyncio.Event) -> None:
        async for ev in self.mstore.watch(start):
            if "/status/" not in ev.key:
                changed.set()
