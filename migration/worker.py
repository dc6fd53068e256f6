"""A worker: registers under an etcd lease and runs the subtasks bound to it.

Steps of its life:

1. Register `workers/<name>` on a lease of its own (a previous incarnation's key, still alive
   after a crash, is waited out: it expires with its lease).
2. Keep the lease alive (a third of the TTL); if the lease is lost, every subtask is stopped at
   once (they would be fenced downstream anyway) and the worker registers again.
3. On every change of tasks or bindings, run exactly the subtasks bound to it whose task wants
   them running, at the binding's epoch: start the new ones, cancel those rebound elsewhere,
   paused, stopped, or bound anew at another epoch.
4. A subtask that pauses itself (divergence, key conflict...) is recorded as paused in its task,
   so it stays paused until resume-task, on this worker or any other.
5. Drain (`request_drain()`: SIGTERM, or an offline-member request in etcd,
   `migration.members`): stop following bindings, mark the record draining (the scheduler
   gives it nothing new), let every subtask finish its batch or chunk and commit it with its
   checkpoint (at most `drain_timeout` seconds, then cancelled: still safe, only slower), and
   revoke the lease: the key vanishes and the leader rebinds the subtasks at once, not after
   the lease TTL. `run()` then returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass

import structlog

from migration.aio import cancel_all_and_wait, cancel_and_wait
from migration.context import Credentials, SubtaskContext
from migration.faults import FaultPoints
from migration.spec import parse_task
from migration.store import Binding, MigrationStore, TaskRecord, WorkerRecord
from migration.subtask import SubtaskRunner
from topo.errors import NodeExistsError, TopoError
from topo.store import TopoStore

log = structlog.get_logger(__name__)

VERSION = "0.1.0"


@dataclass
class _Running:
    binding: Binding
    task: asyncio.Task[None]
    ctx: SubtaskContext


class Worker:
    def __init__(
        self,
        name: str,
        topo: TopoStore,
        creds: Credentials,
        *,
        lease_ttl: int = 3,
        address: str = "",
        faults: FaultPoints | None = None,
        drain_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.topo = topo
        self.mstore = MigrationStore(topo.kv, topo.root)
        self.creds = creds
        self.lease_ttl = lease_ttl
        self.address = address
        self.faults = faults or FaultPoints()
        self.running: dict[tuple[str, str], _Running] = {}
        self.registered = asyncio.Event()
        self.drain_timeout = drain_timeout
        self._drain = asyncio.Event()
        self.drained = asyncio.Event()
        self._lease = 0
        self._started = time.time()
        self.log = log.bind(worker=name)

    def request_drain(self) -> None:
        """5. Drain and return from `run()` (idempotent; SIGTERM calls it)."""
        self._drain.set()

    async def run(self) -> None:
        """Until cancelled, or drained (`request_drain`, offline-member)."""
        from migration.members import MemberStore

        members = MemberStore(self.topo.kv, self.topo.root)
        try:
            while True:
                try:
                    await self._register()
                    async with asyncio.TaskGroup() as tg:
                        keepalive = tg.create_task(self._keep_alive())
                        follow = tg.create_task(self._follow_bindings())
                        offline = tg.create_task(members.wait_offline_request("worker", self.name))
                        drain = tg.create_task(self._drain.wait())
                        await asyncio.wait({keepalive, offline, drain},
                                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                        if drain.done() or offline.done():
                            await cancel_and_wait(follow)
                            await self._drain_now()
                            for t in (keepalive, offline, drain):
                                t.cancel()
                            with contextlib.suppress(Exception):
                                await members.clear_offline_request("worker", self.name)
                            self.drained.set()
                            return
                        offline.cancel()
                        drain.cancel()
                        raise _LeaseLost()
                except* _LeaseLost:
                    self.log.warning("worker lease lost; stopping subtasks and registering again")
                except* TopoError as eg:
                    self.log.warning("worker: etcd trouble, retrying", error=str(eg.exceptions[0]))
                await self._stop_all()
                self.registered.clear()
                await asyncio.sleep(0.5)
        finally:
            await self._stop_all()
            if self._lease:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await self.topo.kv.revoke_lease(self._lease)

    # -- 5 -------------------------------------------------------------------------------

    async def _drain_now(self) -> None:
        started = time.monotonic()
        self.log.info("worker draining", subtasks=len(self.running))
        rec = WorkerRecord(name=self.name, address=self.address, version=VERSION,
                           started_at=self._started, draining=True)  # fmt: skip
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await self.mstore.update_worker(rec, self._lease)
        for r in self.running.values():
            r.ctx.stopping.set()
        pending = [r.task for r in self.running.values() if not r.task.done()]
        if pending:
            _done, late = await asyncio.wait(pending, timeout=self.drain_timeout)
            if late:
                self.log.warning("worker drain: subtasks cancelled past the bound",
                                 late=len(late), bound_s=self.drain_timeout)  # fmt: skip
        await self._stop_all()
        if self._lease:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await self.topo.kv.revoke_lease(self._lease)
            self._lease = 0
        self.log.info("worker drained and deregistered",
                      took_s=round(time.monotonic() - started, 3))  # fmt: skip

    # -- 1, 2 ----------------------------------------------------------------------------

    async def _register(self) -> None:
        rec = WorkerRecord(name=self.name, address=self.address, version=VERSION,
                           started_at=self._started)  # fmt: skip
        while True:
            self._lease = await self.topo.kv.grant_lease(self.lease_ttl)
            try:
                await self.mstore.register_worker(rec, self._lease)
            except NodeExistsError:
                # Our previous incarnation (or a namesake): its key goes with its lease.
                with contextlib.suppress(Exception):
                    await self.topo.kv.revoke_lease(self._lease)
                self._lease = 0
                await asyncio.sleep(0.5)
                continue
            self.registered.set()
            self.log.info("worker registered", ttl=self.lease_ttl)
            return

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            try:
                left = await self.topo.kv.refresh_lease(self._lease)
            except TopoError:
                continue  # etcd away for a moment: the lease may still be alive
            if left <= 0:
                self._lease = 0
                return

    # -- 3 -------------------------------------------------------------------------------

    async def _follow_bindings(self) -> None:
        while True:
            start = await self.mstore.revision() + 1
            await self.reconcile()
            changed = asyncio.Event()

            async def follow(start: int = start, changed: asyncio.Event = changed) -> None:
                async for ev in self.mstore.watch(start):
                    if "/bindings/" in ev.key or "/tasks/" in ev.key:
                        changed.set()
                        return

            watcher = asyncio.create_task(follow())
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2.0):
                        await changed.wait()
            finally:
                await cancel_and_wait(watcher)

    async def reconcile(self) -> None:
        tasks = {t.name: t for t in await self.mstore.list_tasks()}
        mine = {
            (b.task, b.source): b
            for b in await self.mstore.list_bindings()
            if b.worker == self.name and b.task in tasks and tasks[b.task].wants_running(b.source)
        }
        for key, r in list(self.running.items()):
            want = mine.get(key)
            if want is None or want.epoch != r.binding.epoch or r.task.done():
                if want is not None and r.task.done() and want.epoch == r.binding.epoch:
                    continue  # finished, paused or fenced on its own: leave it so
                await self._stop(key)
        for key, b in mine.items():
            if key not in self.running:
                self._start(tasks[b.task], b)

    def _start(self, task: TaskRecord, b: Binding) -> None:
        spec = parse_task(task.spec)
        ctx = SubtaskContext(
            spec=spec, source=spec.source(b.source), epoch=b.epoch, worker=self.name,
            creds=self.creds, topo=self.topo, mstore=self.mstore, faults=self.faults,
            targets=dict(task.targets),
        )  # fmt: skip
        runner = SubtaskRunner(ctx, on_pause=lambda e: self._record_pause(b))
        t = asyncio.create_task(runner.run(), name=f"subtask {b.task}/{b.source}")
        self.running[(b.task, b.source)] = _Running(b, t, ctx)
        self.log.info("subtask started", task=b.task, source=b.source, epoch=b.epoch)

    async def _record_pause(self, b: Binding) -> None:
        """4. A subtask that paused itself stays paused (in etcd) until resume-task."""

        def pause(t: TaskRecord) -> TaskRecord | None:
            if b.source in t.paused_sources:
                return None
            return dataclasses.replace(t, paused_sources=(*t.paused_sources, b.source))

        with contextlib.suppress(Exception):
            await self.mstore.update_task_fields(b.task, pause)

    async def _stop(self, key: tuple[str, str]) -> None:
        r = self.running.pop(key, None)
        if r is None:
            return
        await cancel_and_wait(r.task)
        self.log.info("subtask stopped", task=key[0], source=key[1], epoch=r.binding.epoch)

    async def _stop_all(self) -> None:
        """Every subtask, all cancelled before any is waited for (see `cancel_all_and_wait`)."""
        running, self.running = self.running, {}
        await cancel_all_and_wait([r.task for r in running.values()])
        for (task, source), r in running.items():
            self.log.info("subtask stopped", task=task, source=source, epoch=r.binding.epoch)


class _LeaseLost(Exception):
    pass
