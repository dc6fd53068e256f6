"""Sharding DDL locks (pessimistic mode): an ALTER that reaches merged shards at different
times is applied downstream once, when every shard has it.

The life of a lock, `<task>-`db`.`table`` (target names), top to bottom:

1. A subtask meets a DDL on an upstream table routed to a merged target table. It holds that
   upstream table (its later DML is skipped, recorded in the checkpoint with the position right
   after the DDL) and reports a `DdlInfo` (what it saw, routed). Other tables keep flowing.
2. The keeper (run by the service leader) derives the lock from the infos: owner = the first
   source to arrive, `synced` = sources every upstream table of which (in this target's group)
   has reported, `unsynced` = the others. DDL lists that disagree: state `error`, every text
   shown, nothing applied.
3. All synced: state `executing`. The owner's subtask runs the DDL on the target (a re-run is
   harmless: "already applied" errors are accepted) and records `owner_done`.
4. `owner_done`: state `resuming`. Every subtask (the owner too) rewinds: its checkpoint goes
   back to its hold position with safe mode until where it was, so the held DML is re-read and
   applied (DM's re-sync) and nothing else is applied twice; it records itself `resumed`.
5. All resumed: the keeper deletes the lock and its infos.

Every change of a lock is a compare-and-swap on its key; every step of a subtask is idempotent
and keyed on what is recorded (its holds downstream, the lock's fields in etcd), so a leader
change, a worker SIGKILL at any step, or a target restart resumes from the recorded state.

A source removed from the task (stop-task --source) stops counting: the lock proceeds without
it and says so in its history. `unlock-ddl-lock` remains for the seed's manual cases (audited):
`--owner` names another synced source to execute, and an unsynced lock is forced on with its
unsynced sources dropped; `--force-remove` deletes the lock whatever happened, and the held
sources resume without the DDL.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

from migration.errors import MigrationError, TaskConfigError
from migration.faults import FaultPoints
from migration.store import MigrationStore, TaskRecord
from topo.errors import BadVersionError, NodeExistsError, NoNodeError
from topo.records import Record
from topo.store import update_record


class LockState(enum.StrEnum):
    WAITING = "waiting"
    EXECUTING = "executing"
    RESUMING = "resuming"
    ERROR = "error"


# The keeper's transitions: state -> the states it may move to (anything else is a bug).
TRANSITIONS: dict[LockState, frozenset[LockState]] = {
    LockState.WAITING: frozenset({LockState.EXECUTING, LockState.ERROR}),
    LockState.EXECUTING: frozenset({LockState.RESUMING}),
    LockState.RESUMING: frozenset(),
    LockState.ERROR: frozenset({LockState.WAITING}),
}


def lock_id(task: str, target_db: str, target_table: str) -> str:
    return f"{task}-`{target_db}`.`{target_table}`"


class NoSuchLockError(MigrationError):
    code = "NOT_FOUND"

    def __init__(self, lock: str) -> None:
        super().__init__(f"no DDL lock {lock!r}")
        self.lock = lock


@dataclass(frozen=True)
class DdlInfo(Record):
    """What one source saw: a DDL on one of its upstream tables of a merged target table."""

    KIND: ClassVar[str] = "ddl info"
    task: str
    source: str
    upstream: str  # db.table upstream
    target: str  # db.table downstream
    ddls: tuple[str, ...]
    at: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ddls", tuple(self.ddls))


@dataclass(frozen=True)
class DdlLock(Record):
    KIND: ClassVar[str] = "ddl lock"
    id: str
    task: str
    target: str
    owner: str
    ddls: tuple[str, ...]
    state: LockState = LockState.WAITING
    mode: str = "pessimistic"
    synced: tuple[str, ...] = ()
    unsynced: tuple[str, ...] = ()
    resumed: tuple[str, ...] = ()
    owner_done: bool = False
    # Sources no longer waited for (removed from the task, or dropped by a forced unlock).
    dropped: tuple[str, ...] = ()
    # Each source's DDL list when they disagree (state error).
    conflicts: dict[str, list[str]] = field(default_factory=dict)
    history: tuple[str, ...] = ()
    created_at: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", LockState(self.state))
        for name in ("ddls", "synced", "unsynced", "resumed", "dropped", "history"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def sources(self) -> tuple[str, ...]:
        return (*self.synced, *self.unsynced)

    def with_note(self, note: str, **changes: object) -> DdlLock:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        return dataclasses.replace(self, history=(*self.history, f"{stamp} {note}"), **changes)  # type: ignore[arg-type]

    def moved(self, state: LockState, note: str, **changes: object) -> DdlLock:
        if state not in TRANSITIONS[self.state]:
            raise AssertionError(f"lock {self.id}: no transition {self.state} -> {state}")
        return self.with_note(note, state=state, **changes)

    def to_dm(self) -> dict[str, object]:
        """DM's show-ddl-locks shape, plus our state and history."""
        return {
            "ID": self.id, "task": self.task, "mode": self.mode, "owner": self.owner,
            "DDLs": list(self.ddls), "synced": list(self.synced), "unsynced": list(self.unsynced),
            "state": self.state.value, "resumed": list(self.resumed),
            "ownerDone": self.owner_done, "dropped": list(self.dropped),
            "conflicts": self.conflicts, "history": list(self.history),
        }  # fmt: skip


def _enc(text: str) -> str:
    return urllib.parse.quote(text, safe="")


class DdlLockStore:
    """Infos and locks in etcd, under `<root>/global/migration/ddl/`."""

    def __init__(self, mstore: MigrationStore) -> None:
        self.kv = mstore.kv
        self.prefix = f"{mstore.prefix}ddl/"

    def info_key(self, info: DdlInfo) -> str:
        return (
            f"{self.prefix}infos/{info.task}/{_enc(info.target)}/{_enc(info.source)}/"
            f"{_enc(info.upstream)}"
        )

    def lock_key(self, lock: str) -> str:
        return f"{self.prefix}locks/{_enc(lock)}"

    async def put_info(self, info: DdlInfo) -> None:
        """Create-if-absent: a subtask that reports again after a restart changes nothing."""
        try:
            await self.kv.create(self.info_key(info), info.to_json())
        except NodeExistsError:
            pass

    async def infos(self, task: str | None = None) -> list[DdlInfo]:
        prefix = f"{self.prefix}infos/" + (f"{task}/" if task else "")
        return [
            DdlInfo.from_json(kv.value, revision=kv.create_revision)
            for kv in await self.kv.get_prefix(prefix)
        ]

    async def delete_infos(self, task: str, target: str) -> None:
        await self.kv.delete_prefix(f"{self.prefix}infos/{task}/{_enc(target)}/")

    async def locks(self) -> list[DdlLock]:
        return sorted(
            (
                DdlLock.from_json(kv.value, revision=kv.mod_revision)
                for kv in await self.kv.get_prefix(f"{self.prefix}locks/")
            ),
            key=lambda lk: lk.id,
        )

    async def get(self, lock: str) -> DdlLock | None:
        kv = await self.kv.get(self.lock_key(lock))
        return None if kv is None else DdlLock.from_json(kv.value, revision=kv.mod_revision)

    async def create(self, lock: DdlLock) -> DdlLock:
        kv = await self.kv.create(self.lock_key(lock.id), lock.to_json())
        return lock.with_revision(kv.mod_revision)

    async def replace(self, old: DdlLock, new: DdlLock) -> DdlLock:
        """Compare-and-swap: BadVersionError if the lock changed since `old` was read."""
        kv = await self.kv.update(self.lock_key(old.id), new.to_json(), old.revision)
        return new.with_revision(kv.mod_revision)

    async def update(self, lock: str, fn: Callable[[DdlLock], DdlLock | None]) -> DdlLock | None:
        """Read-modify-write with retries; None when the lock does not exist (any more)."""
        return await update_record(
            self.kv, self.lock_key(lock), DdlLock, f"ddl lock {lock}", fn, missing_ok=True
        )

    async def delete(self, lock: DdlLock, outcome: str) -> bool:
        """Delete the lock as read (compare-and-swap) and keep its last state and history
        under `ddl/history/`, so the person on call can read how it ended; False if it
        changed meanwhile."""
        try:
            await self.kv.delete(self.lock_key(lock.id), lock.revision)
        except (NoNodeError, BadVersionError):
            return False
        body = json.dumps({"outcome": outcome, "at": time.time(), **lock.to_dm()}).encode()
        await self.kv.create(f"{self.prefix}history/{time.time_ns():020d}", body)
        return True

    async def resolved(self, task: str | None = None, limit: int = 20) -> list[dict[str, object]]:
        """The newest resolved locks (of `task`), newest first."""
        out = [json.loads(kv.value) for kv in await self.kv.get_prefix(f"{self.prefix}history/")]
        out = [d for d in out if task is None or d.get("task") == task]
        return list(reversed(out))[:limit]


# -- the keeper's decision: pure -----------------------------------------------------------------


def group_sources(task: TaskRecord, target: str) -> dict[str, set[str]]:
    """Source -> its upstream tables routed to `target` (check-task's plan, for the sources
    still in the task)."""
    out: dict[str, set[str]] = {}
    in_task = set(task.source_ids())
    for up in task.upstreams.get(target, []):
        source, _, table = up.partition(":")
        if source in in_task:
            out.setdefault(source, set()).add(table)
    return out


def derive(
    task: TaskRecord, target: str, infos: list[DdlInfo], current: DdlLock | None
) -> DdlLock | None:
    """The lock as the infos and the task say it should be now (None: no lock). Keeps the
    recorded owner, state and progress; moves the state forward where its condition holds."""
    if not infos and current is None:
        return None
    group = group_sources(task, target)
    by_source: dict[str, list[DdlInfo]] = {}
    for i in sorted(infos, key=lambda i: (i.revision, i.source, i.upstream)):
        by_source.setdefault(i.source, []).append(i)
    dropped = set(current.dropped) if current else set()
    gone = {s for s in by_source if s not in group} | (
        set(current.sources) - set(group) if current else set()
    )
    wanted = [s for s in group if s not in dropped]
    synced = [
        s for s in wanted if s in by_source and {i.upstream for i in by_source[s]} >= group[s]
    ]
    unsynced = [s for s in wanted if s not in synced]
    if current is None:
        first = next(iter(by_source))
        ddls = by_source[first][0].ddls
        lock = DdlLock(
            id=lock_id(task.name, *target.split(".", 1)), task=task.name, target=target,
            owner=first, ddls=ddls, created_at=time.time(),
        ).with_note(f"created by {first}: {'; '.join(ddls)}")  # fmt: skip
    else:
        lock = current
    notes = [f"{s} is no longer in the task: not waited for" for s in sorted(gone)
             if s not in lock.dropped]  # fmt: skip
    if notes:
        lock = lock.with_note("; ".join(notes), dropped=tuple(sorted(set(lock.dropped) | gone)))
    lock = dataclasses.replace(lock, synced=tuple(synced), unsynced=tuple(unsynced))
    if lock.owner not in synced and lock.owner not in unsynced and synced:
        lock = lock.with_note(
            f"owner {lock.owner} is gone; {synced[0]} owns the lock", owner=synced[0]
        )
    texts = {s: sorted({d for i in by_source[s] for d in i.ddls}) for s in synced}
    if lock.state == LockState.WAITING and len({tuple(t) for t in texts.values()}) > 1:
        return lock.moved(LockState.ERROR, "DDLs disagree between sources; nothing applied",
                          conflicts={s: list(t) for s, t in texts.items()})  # fmt: skip
    if lock.state == LockState.WAITING and synced and not unsynced:
        return lock.moved(LockState.EXECUTING, f"all synced: {lock.owner} executes the DDL")
    if lock.state == LockState.EXECUTING and lock.owner_done:
        return lock.moved(LockState.RESUMING, f"{lock.owner} applied the DDL; all resume")
    return lock


def finished(lock: DdlLock) -> bool:
    """Every source still in the lock has resumed: the lock can go."""
    waiting_for = [s for s in lock.sources if s not in lock.dropped]
    return lock.state == LockState.RESUMING and all(s in lock.resumed for s in waiting_for)


def check_unlock(lock: DdlLock, owner: str | None) -> None:
    if owner is not None and owner not in lock.synced:
        raise TaskConfigError(
            f"--owner {owner} is not a synced source of {lock.id} (synced: "
            f"{', '.join(lock.synced) or 'none'})",
            key="owner",
        )


PassHook = Callable[[list[DdlLock], list[DdlLock]], Awaitable[None]]


class Keeper:
    """The leader's side: derive every lock from the infos and the tasks, and move it on.

    `on_pass(locks, resolved)`, when set, is called after each pass with the locks that exist
    and those resolved in it (the service turns them into metrics and alerts; migration/
    imports no metrics library)."""

    def __init__(self, store: DdlLockStore, faults: FaultPoints) -> None:
        self.store = store
        self.faults = faults
        self.on_pass: PassHook | None = None

    async def reconcile(self, tasks: dict[str, TaskRecord]) -> list[str]:
        """One pass over every lock; returns what it did, one line each."""
        infos = await self.store.infos()
        locks = {lk.id: lk for lk in await self.store.locks()}
        groups: dict[tuple[str, str], list[DdlInfo]] = {}
        for i in infos:
            groups.setdefault((i.task, i.target), []).append(i)
        for lk in locks.values():
            groups.setdefault((lk.task, lk.target), [])
        done: list[str] = []
        resolved: list[DdlLock] = []
        for (task_name, target), its in sorted(groups.items()):
            task = tasks.get(task_name)
            lid = lock_id(task_name, *target.split(".", 1))
            current = locks.get(lid)
            if task is None:  # the task was stopped: its locks and infos go with it
                await self.store.delete_infos(task_name, target)
                if current is not None:
                    await self.store.delete(current, "removed: the task was stopped")
                done.append(f"removed DDL lock {lid} (task stopped)")
                continue
            new = derive(task, target, its, current)
            if new is None:
                continue
            if current is not None and finished(new):
                if await self.store.delete(new.with_revision(current.revision), "done"):
                    resolved.append(new)
                await self.store.delete_infos(task_name, target)
                done.append(f"DDL lock {lid} done: every source resumed")
                continue
            if new == current:
                continue
            await self.faults.hit("ddl.keeper_mid_transition")
            try:
                if current is None:
                    await self.store.create(new)
                    done.append(f"DDL lock {lid} created, owner {new.owner}")
                else:
                    await self.store.replace(current, new)
                    if new.state != current.state:
                        done.append(f"DDL lock {lid}: {current.state} -> {new.state}")
            except (BadVersionError, NodeExistsError):
                continue  # a subtask or another pass changed it: the next pass sees that
        if self.on_pass is not None:
            await self.on_pass(await self.store.locks(), resolved)
        return done
