"""Migration state in etcd: tasks, registered sources, workers, bindings and subtask statuses.

One small interface, built on the topology's key-value layer (`topo.kv`), with the same
contract: records are immutable and carry the revision they were read at; `create_*` is
create-if-absent; `update_*_fields(fn)` is a compare-and-swap loop. Keys under the root:

    global/migration/tasks/<task>                    TaskRecord: the spec and the wanted stage
    global/migration/sources/<source-id>             RegisteredSource (operate-source create)
    global/migration/workers/<worker>                WorkerRecord, bound to the worker's lease
    global/migration/bindings/<task>/<source-id>     Binding: which worker runs it, its epoch
    global/migration/status/<task>/<source-id>       SubtaskStatus: written by the bound worker

Source ids such as `commerce/-80` are percent-encoded in keys. A binding's `epoch` only ever
grows (every bind writes one above the store's revision, as a compare-and-swap), also across a
stop-task and start-task, and the downstream checkpoint refuses commits from any other epoch,
which is what fences a worker that lost its binding.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from topo.errors import BadVersionError, NodeExistsError, NoNodeError
from topo.kv import EtcdKV, WatchEvent
from topo.records import Record
from topo.store import update_record

R = TypeVar("R", bound=Record)


class Stage:
    """DM's stage names, as query-status shows them."""

    NEW = "New"
    RUNNING = "Running"
    PAUSED = "Paused"
    STOPPED = "Stopped"
    FINISHED = "Finished"


@dataclass(frozen=True)
class TaskRecord(Record):
    """A task as started: its spec (the parsed YAML document) and the stage it should be in.
    `paused_sources` are subtasks paused by pause-task --source (or by a pausing error)."""

    KIND: ClassVar[str] = "migration task"
    name: str
    spec: dict[str, Any]
    stage: str = Stage.RUNNING
    paused_sources: tuple[str, ...] = ()
    # Target tables ("db.table") -> how many upstream tables check-task found routed there,
    # and which ("source:db.table"): a sharding DDL lock waits for each of them.
    targets: dict[str, int] = field(default_factory=dict)
    upstreams: dict[str, list[str]] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "paused_sources", tuple(self.paused_sources))

    def source_ids(self) -> list[str]:
        return [str(s["source-id"]) for s in self.spec.get("sources", [])]

    def wants_running(self, source_id: str) -> bool:
        return self.stage == Stage.RUNNING and source_id not in self.paused_sources


@dataclass(frozen=True)
class RegisteredSource(Record):
    """An external upstream registered once with operate-source, usable by id in tasks."""

    KIND: ClassVar[str] = "migration source"
    source_id: str
    host: str
    port: int
    created_at: float = 0.0


@dataclass(frozen=True)
class WorkerRecord(Record):
    """A live worker; the key is bound to the worker's lease and vanishes when it dies."""

    KIND: ClassVar[str] = "migration worker"
    name: str
    address: str = ""
    version: str = ""
    started_at: float = 0.0
    # Set while the worker drains (offline-member): it takes no new bindings.
    draining: bool = False


@dataclass(frozen=True)
class Binding(Record):
    KIND: ClassVar[str] = "migration binding"
    task: str
    source: str
    worker: str
    epoch: int
    bound_at: float = 0.0


@dataclass(frozen=True)
class SubtaskStatus(Record):
    """What the bound worker last reported about one (task, source) subtask."""

    KIND: ClassVar[str] = "migration subtask status"
    task: str
    source: str
    worker: str = ""
    epoch: int = 0
    stage: str = Stage.NEW
    unit: str = ""
    source_address: str = ""
    load: dict[str, Any] = field(default_factory=dict)
    sync: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] = field(default_factory=dict)
    updated_at: float = 0.0


class MigrationStore:
    """The migration records of one topology root in etcd."""

    def __init__(self, kv: EtcdKV, root: str) -> None:
        self.kv = kv
        self.prefix = f"{root}/global/migration/"

    # -- keys ----------------------------------------------------------------------------

    def task_key(self, name: str) -> str:
        return f"{self.prefix}tasks/{name}"

    def source_key(self, source_id: str) -> str:
        return f"{self.prefix}sources/{_enc(source_id)}"

    def worker_key(self, name: str) -> str:
        return f"{self.prefix}workers/{name}"

    def binding_key(self, task: str, source_id: str) -> str:
        return f"{self.prefix}bindings/{task}/{_enc(source_id)}"

    def status_key(self, task: str, source_id: str) -> str:
        return f"{self.prefix}status/{task}/{_enc(source_id)}"

    # -- generic -------------------------------------------------------------------------

    async def _get(self, key: str, cls: type[R]) -> R | None:
        kv = await self.kv.get(key)
        return None if kv is None else cls.from_json(kv.value, revision=kv.mod_revision)

    async def _list(self, prefix: str, cls: type[R]) -> list[R]:
        return [
            cls.from_json(kv.value, revision=kv.mod_revision)
            for kv in await self.kv.get_prefix(prefix)
        ]

    async def _create(self, key: str, rec: R, lease: int | None = None) -> R:
        kv = await self.kv.create(key, rec.to_json(), lease=lease)
        return rec.with_revision(kv.mod_revision)

    async def _update_fields(
        self, key: str, cls: type[R], what: str, fn: Callable[[R], R | None]
    ) -> R:
        rec = await update_record(self.kv, key, cls, what, fn)
        assert rec is not None
        return rec

    # -- tasks ---------------------------------------------------------------------------

    async def create_task(self, rec: TaskRecord) -> TaskRecord:
        now = time.time()
        rec = dataclasses.replace(rec, created_at=now, updated_at=now)
        return await self._create(self.task_key(rec.name), rec)

    async def get_task(self, name: str) -> TaskRecord | None:
        return await self._get(self.task_key(name), TaskRecord)

    async def list_tasks(self) -> list[TaskRecord]:
        return sorted(await self._list(f"{self.prefix}tasks/", TaskRecord), key=lambda t: t.name)

    async def update_task_fields(
        self, name: str, fn: Callable[[TaskRecord], TaskRecord | None]
    ) -> TaskRecord:
        def stamped(t: TaskRecord) -> TaskRecord | None:
            new = fn(t)
            return None if new is None or new == t else dataclasses.replace(
                new, updated_at=time.time()
            )  # fmt: skip

        return await self._update_fields(self.task_key(name), TaskRecord, f"task {name}", stamped)

    async def delete_task(self, name: str) -> None:
        """The task, then its bindings and statuses (stop-task). The task goes first: a
        scheduler that still saw it would bind its subtasks again."""
        try:
            await self.kv.delete(self.task_key(name))
        except NoNodeError:
            pass
        await self.kv.delete_prefix(f"{self.prefix}bindings/{name}/")
        await self.kv.delete_prefix(f"{self.prefix}status/{name}/")

    # -- registered sources ----------------------------------------------------------------

    async def create_source(self, rec: RegisteredSource) -> RegisteredSource:
        return await self._create(
            self.source_key(rec.source_id), dataclasses.replace(rec, created_at=time.time())
        )

    async def get_source(self, source_id: str) -> RegisteredSource | None:
        return await self._get(self.source_key(source_id), RegisteredSource)

    async def list_sources(self) -> list[RegisteredSource]:
        return await self._list(f"{self.prefix}sources/", RegisteredSource)

    async def delete_source(self, source_id: str) -> None:
        await self.kv.delete(self.source_key(source_id))

    # -- workers -------------------------------------------------------------------------

    async def register_worker(self, rec: WorkerRecord, lease: int) -> WorkerRecord:
        """Create the worker's key on its lease; NodeExistsError if a live worker has the name."""
        return await self._create(self.worker_key(rec.name), rec, lease=lease)

    async def update_worker(self, rec: WorkerRecord, lease: int) -> None:
        await self.kv.put(self.worker_key(rec.name), rec.to_json(), lease=lease)

    async def list_workers(self) -> list[WorkerRecord]:
        return sorted(
            await self._list(f"{self.prefix}workers/", WorkerRecord), key=lambda w: w.name
        )

    # -- bindings ------------------------------------------------------------------------

    async def get_binding(self, task: str, source_id: str) -> Binding | None:
        return await self._get(self.binding_key(task, source_id), Binding)

    async def list_bindings(self, task: str | None = None) -> list[Binding]:
        prefix = f"{self.prefix}bindings/" + (f"{task}/" if task else "")
        return await self._list(prefix, Binding)

    async def bind(
        self, task: str, source_id: str, worker: str, current: Binding | None
    ) -> Binding:
        """Bind the subtask to `worker` with a new epoch (compare-and-swap against `current`,
        the binding as last read, None if there was none). BadVersionError or NodeExistsError
        when someone else rebound it meanwhile."""
        key = self.binding_key(task, source_id)
        # The epoch must exceed every epoch this subtask ever had, also across a stop-task and
        # start-task (which forget the binding but not the checkpoint downstream): the store's
        # revision only grows, and every earlier epoch was at most the revision after its write.
        revision = await self.kv.revision()
        rec = Binding(
            task=task,
            source=source_id,
            worker=worker,
            epoch=max(revision + 1, (current.epoch if current else 0) + 1),
            bound_at=time.time(),
        )
        if current is None:
            return await self._create(key, rec)
        kv = await self.kv.update(key, rec.to_json(), current.revision)
        return rec.with_revision(kv.mod_revision)

    async def unbind(self, binding: Binding) -> None:
        """Remove a binding (its task stopped) unless it changed since it was read."""
        try:
            await self.kv.delete(self.binding_key(binding.task, binding.source), binding.revision)
        except (NoNodeError, BadVersionError):
            pass

    # -- statuses ------------------------------------------------------------------------

    async def put_status(self, status: SubtaskStatus) -> None:
        """Only the bound worker writes a subtask's status (a stale one is recognisable by its
        epoch), so a plain put is enough."""
        status = dataclasses.replace(status, updated_at=time.time())
        await self.kv.put(self.status_key(status.task, status.source), status.to_json())

    async def list_statuses(self, task: str | None = None) -> list[SubtaskStatus]:
        prefix = f"{self.prefix}status/" + (f"{task}/" if task else "")
        return await self._list(prefix, SubtaskStatus)

    # -- watching ------------------------------------------------------------------------

    async def revision(self) -> int:
        return await self.kv.revision()

    def watch(self, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Every change under the migration prefix (tasks, workers, bindings...)."""
        return self.kv.watch(self.prefix, prefix=True, start_revision=start_revision)


def _enc(source_id: str) -> str:
    return urllib.parse.quote(source_id, safe="")


__all__ = [
    "Binding",
    "MigrationStore",
    "NodeExistsError",
    "RegisteredSource",
    "Stage",
    "SubtaskStatus",
    "TaskRecord",
    "WorkerRecord",
]
