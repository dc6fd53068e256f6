"""Running one workflow: its record in etcd, its shard lock, and its named steps.

`WorkflowRun` is the frame every workflow module uses, so each of them reads as a plain list of
steps. Entering it creates the workflow record (status `running`, so a waiting workflow is
visible), then takes the shard lock (saying who holds it while it waits, and waiting no longer
than the lock timeout nor past the caller's deadline: a workflow whose client gave up never
starts acting later); each `step()` is recorded with its timing and reported to
the progress callback; leaving it records success or failure and releases the lock.

Step records are written to etcd in the background, coalesced, so that recording never adds a
round trip to the write-unavailability window of a reparent; the final state is flushed before
the workflow returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import Awaitable
from types import TracebackType
from typing import Any, TypeVar

import structlog

from topo.errors import BadVersionError, TopoError
from topo.kv import Fence
from topo.lock import ShardLock
from topo.records import WorkflowRecord, WorkflowStatus, WorkflowStep
from workflows.env import ProgressFn, WorkflowEnv
from workflows.errors import DeadlineExceededError
from workflows.result import ReparentResult

T = TypeVar("T")

log = structlog.get_logger(__name__)


def new_workflow_id(action: str) -> str:
    short = "".join(c for c in action if c.isupper()).lower() or "wf"
    return f"{short}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


class WorkflowRun:
    """`async with WorkflowRun(env, action, ks, shard, args) as run:` then `await run.step(...)`."""

    def __init__(
        self,
        env: WorkflowEnv,
        action: str,
        keyspace: str,
        shard: str,
        args: dict[str, Any],
        *,
        progress: ProgressFn | None = None,
        lock_timeout: float | None = None,
        deadline: float | None = None,
    ) -> None:
        self.env = env
        self.deadline = deadline
        self.id = new_workflow_id(action)
        self.action = action
        self.keyspace = keyspace
        self.shard = shard
        self.progress = progress
        now = time.time()
        self.record = WorkflowRecord(
            id=self.id,
            action=action,
            keyspace=keyspace,
            shard=shard,
            args=args,
            instance_id=env.store.instance_id,
            created_at=now,
            updated_at=now,
        )
        self.lock_timeout = lock_timeout if lock_timeout is not None else env.settings.lock_timeout
        self.lock = ShardLock(
            env.store,
            keyspace,
            shard,
            action=action,
            workflow_id=self.id,
            timeout=self.lock_timeout,
        )
        self.started = time.monotonic()
        self._flush_lock = asyncio.Lock()
        self._flush_task: asyncio.Task[None] | None = None
        self._dirty = False
        self.log = log.bind(workflow_id=self.id, keyspace=keyspace, shard=shard, action=action)

    @property
    def fence(self) -> Fence:
        return self.lock.fence

    def _check_deadline(self, when: str) -> None:
        if self.deadline is not None and time.time() >= self.deadline:
            raise DeadlineExceededError(
                f"{self.action} on {self.keyspace}/{self.shard} not started: the caller's "
                f"deadline passed {when} (its client gave up); nothing was changed"
            )

    async def _acquire_saying_who_holds_it(self) -> None:
        """Take the lock; while it is held by someone else, say by whom, for what and since
        when (at once, then every few seconds), so a wait is never silent."""
        acquire = asyncio.ensure_future(self.lock.acquire())
        said: tuple[str, str] | None = None
        next_at = 0.0
        try:
            while True:
                done, _ = await asyncio.wait({acquire}, timeout=0.05 if said is None else 1.0)
                if done:
                    acquire.result()
                    return
                # Read the holder without ever delaying the moment the lock is ours.
                reading = asyncio.ensure_future(self.env.store.get_lock(self.keyspace, self.shard))
                await asyncio.wait({acquire, reading}, return_when=asyncio.FIRST_COMPLETED)
                if not reading.done():
                    reading.cancel()
                    # Waits for it without taking its outcome, and without swallowing our
                    # own cancellation (which `suppress(BaseException)` around it did).
                    await asyncio.wait({reading})
                    continue
                holder = None if reading.cancelled() or reading.exception() else reading.result()
                if holder is None:
                    continue
                key = (holder.instance_id, holder.workflow_id or holder.action)
                if key != said or time.monotonic() >= next_at:
                    said, next_at = key, time.monotonic() + 5.0
                    age = max(0.0, time.time() - holder.started_at) if holder.started_at else 0.0
                    left = self.lock.timeout - (time.monotonic() - self.started)
                    self._emit({
                        "event": "waiting", "step": "lock_shard", "holder": holder.describe(),
                        "holder_action": holder.action, "age_s": round(age, 1),
                        "detail": f"waiting for the shard lock held by {holder.describe()} "
                        f"({holder.action}, {age:.0f}s); giving up in {max(0.0, left):.0f}s",
                    })  # fmt: skip
        finally:
            if not acquire.done():
                acquire.cancel()
                await asyncio.wait({acquire})

    async def __aenter__(self) -> WorkflowRun:
        # An unknown keyspace or shard is a plain NoNodeError: no workflow record, no lock key.
        await self.env.store.get_shard(self.keyspace, self.shard)
        self._check_deadline("before it started")
        if self.deadline is not None:
            self.lock.timeout = max(0.0, min(self.lock_timeout, self.deadline - time.time()))
        self.record = await self.env.store.create_workflow(self.record)
        self._emit({"event": "started", "args": self.record.args})
        try:
            await self.step("lock_shard", self._acquire_saying_who_holds_it())
            self._check_deadline("while it waited for the shard lock")
        except BaseException as e:
            with contextlib.suppress(Exception):
                await self.lock.release()
            await self._finish(WorkflowStatus.FAILED, str(e) or type(e).__name__)
            raise
        self.log.info("workflow started", lock_wait_s=round(self.lock.waited_s, 4))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.lock.__aexit__(exc_type, exc, tb)
        except BaseException as lost:
            exc = lost
            exc_type = type(lost)
            await self._finish(WorkflowStatus.FAILED, str(lost))
            raise
        if exc is None:
            await self._finish(WorkflowStatus.SUCCEEDED, "")
        else:
            await self._finish(WorkflowStatus.FAILED, str(exc) or type(exc).__name__)

    def set_result(self, result: dict[str, Any]) -> None:
        self.record = dataclasses.replace(self.record, result=result)

    def result(self, **fields: Any) -> ReparentResult:
        """The reparent result with this run's identity and duration filled in, recorded in
        the workflow record as well."""
        result = ReparentResult(
            workflow_id=self.id,
            action=self.action,
            keyspace=self.keyspace,
            shard=self.shard,
            duration_ms=round((time.monotonic() - self.started) * 1000, 1),
            **fields,
        )
        self.set_result(result.to_dict())
        return result

    async def step(self, name: str, work: Awaitable[T], *, detail: str = "") -> T:
        """Run one named step, recording its start, end and outcome."""
        started = time.time()
        self._set_step(WorkflowStep(name=name, status="running", started_at=started, detail=detail))
        self._emit({"event": "step", "step": name, "status": "running", "detail": detail})
        try:
            result = await work
        except BaseException as e:
            msg = str(e) or type(e).__name__
            self._set_step(
                WorkflowStep(name=name, status="failed", started_at=started,
                             finished_at=time.time(), detail=msg)
            )  # fmt: skip
            self._emit({"event": "step", "step": name, "status": "failed", "detail": msg})
            raise
        finished = time.time()
        self._set_step(
            WorkflowStep(name=name, status="done", started_at=started, finished_at=finished,
                         detail=detail)
        )  # fmt: skip
        self._emit(
            {"event": "step", "step": name, "status": "done", "detail": detail,
             "ms": round((finished - started) * 1000, 2)}
        )  # fmt: skip
        return result

    def note(self, name: str, detail: str) -> None:
        """Record a decision that is not a step of its own (the elected candidate, a skip)."""
        now = time.time()
        self._set_step(
            WorkflowStep(name=name, status="done", started_at=now, finished_at=now, detail=detail)
        )
        self._emit({"event": "step", "step": name, "status": "done", "detail": detail})
        self.log.info(name, detail=detail)

    # -- record keeping ---------------------------------------------------------------------

    def _set_step(self, step: WorkflowStep) -> None:
        steps = list(self.record.steps)
        for i in range(len(steps) - 1, -1, -1):
            if steps[i].name == step.name and steps[i].status == "running":
                steps[i] = step
                break
        else:
            steps.append(step)
        self.record = dataclasses.replace(self.record, steps=tuple(steps), updated_at=time.time())
        self._dirty = True
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        """Write the latest record; coalesces bursts of step updates into few etcd writes."""
        async with self._flush_lock:
            while self._dirty:
                self._dirty = False
                await self._write_record()

    async def _write_record(self) -> None:
        store = self.env.store
        for _ in range(5):
            try:
                # Steps recorded while this write was in flight must survive it: keep the
                # current record and take only the new revision from the write.
                written = await store.update_workflow(self.record)
                self.record = self.record.with_revision(written.revision)
                return
            except TopoError as e:
                if not isinstance(e, BadVersionError):
                    self.log.warning("could not record workflow progress", error=str(e))
                    return
                # Someone (a restarted instance marking it interrupted) wrote it: keep ours.
                current = await store.get_workflow(self.id)
                self.record = self.record.with_revision(current.revision)

    async def _finish(self, status: WorkflowStatus, error: str) -> None:
        self.record = dataclasses.replace(
            self.record, status=status, error=error, updated_at=time.time()
        )
        self._dirty = True
        with contextlib.suppress(Exception):
            await self._flush()
        elapsed_ms = round((time.monotonic() - self.started) * 1000, 1)
        self._emit({"event": "finished", "status": status.value, "error": error,
                    "result": self.record.result, "ms": elapsed_ms})  # fmt: skip
        if status == WorkflowStatus.SUCCEEDED:
            self.log.info("workflow succeeded", ms=elapsed_ms)
        else:
            self.log.warning("workflow failed", ms=elapsed_ms, error=error)

    def _emit(self, event: dict[str, Any]) -> None:
        if self.progress is not None:
            with contextlib.suppress(Exception):
                self.progress({"workflow_id": self.id, "action": self.action,
                               "t": round(time.time(), 4), **event})  # fmt: skip
