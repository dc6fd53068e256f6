"""The task commands (DM's names and JSON shapes), as plain async functions over etcd and the
servers. The service's command registry calls these and nothing else, so the HTTP API, the CLI
and the tests share one implementation.

Every answer has DM's `result` (true on success) and `msg`, and per-source entries. Errors that
make a command impossible (unknown task, bad file, failed check) are raised as typed errors;
the API turns them into its error answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import time
from typing import Any

from migration.check import CheckReport, check_task
from migration.checkpoint import CheckpointTable
from migration.context import Credentials
from migration.errors import (
    CheckFailedError,
    NoSuchTaskError,
    TaskConfigError,
    TaskExistsError,
)
from migration.sources import resolve_source
from migration.spec import TaskSpec, parse_task, parse_task_yaml
from migration.store import (
    Binding,
    MigrationStore,
    RegisteredSource,
    Stage,
    SubtaskStatus,
    TaskRecord,
)
from migration.upstream import read_server_state
from mysqlctl.session import open_session
from topo.errors import NodeExistsError, NoNodeError
from topo.store import TopoStore

BIND_WAIT_S = 3.0


class TaskOps:
    def __init__(self, topo: TopoStore, creds: Credentials) -> None:
        self.topo = topo
        self.creds = creds
        self.mstore = MigrationStore(topo.kv, topo.root)

    # -- check-task, start-task ------------------------------------------------------------

    async def check(self, task_yaml: str) -> tuple[TaskSpec, CheckReport]:
        spec = parse_task_yaml(task_yaml)
        return spec, await check_task(spec, self.topo, self.mstore, self.creds)

    async def start(self, task_yaml: str, *, remove_meta: bool = False) -> dict[str, Any]:
        spec, report = await self.check(task_yaml)
        if not report.ok:
            raise CheckFailedError(report.problems)
        if await self.mstore.get_task(spec.name) is not None:
            raise TaskExistsError(spec.name)
        if remove_meta:
            t = spec.target
            async with await open_session(self.creds.params(t.host, t.port)) as s:
                await CheckpointTable(spec.meta_schema, spec.name).drop(s)
        rec = TaskRecord(name=spec.name, spec=dict(spec.raw), stage=Stage.RUNNING,
                         targets=report.target_counts(), upstreams=report.targets)  # fmt: skip
        try:
            await self.mstore.create_task(rec)
        except NodeExistsError:
            raise TaskExistsError(spec.name) from None
        bindings = await self._wait_bound(spec.name, len(spec.sources))
        return {
            "result": True,
            "msg": "",
            "sources": [
                {"result": True, "msg": "" if b else "waiting for a worker", "source": s.source_id,
                 "worker": b.worker if b else ""}
                for s in spec.sources
                for b in [bindings.get(s.source_id)]
            ],
        }  # fmt: skip

    async def _wait_bound(self, task: str, n: int) -> dict[str, Binding]:
        deadline = time.monotonic() + BIND_WAIT_S
        while True:
            got = {b.source: b for b in await self.mstore.list_bindings(task)}
            if len(got) >= n or time.monotonic() > deadline:
                return got
            await asyncio.sleep(0.05)

    # -- stop, pause, resume ---------------------------------------------------------------

    async def _task(self, name: str) -> TaskRecord:
        rec = await self.mstore.get_task(name)
        if rec is None:
            raise NoSuchTaskError(name)
        return rec

    async def stop(self, name: str) -> dict[str, Any]:
        rec = await self._task(name)
        bindings = {b.source: b for b in await self.mstore.list_bindings(name)}
        await self.mstore.delete_task(name)
        return {"result": True, "msg": "", "sources": [
            {"result": True, "msg": "", "source": s,
             "worker": bindings[s].worker if s in bindings else ""}
            for s in rec.source_ids()
        ]}  # fmt: skip

    async def pause(self, name: str, sources: list[str] | None = None) -> dict[str, Any]:
        return await self._set_paused(name, sources, paused=True)

    async def resume(self, name: str, sources: list[str] | None = None) -> dict[str, Any]:
        return await self._set_paused(name, sources, paused=False)

    async def _set_paused(
        self, name: str, sources: list[str] | None, *, paused: bool
    ) -> dict[str, Any]:
        rec = await self._task(name)
        chosen = list(sources) if sources else rec.source_ids()
        unknown = [s for s in chosen if s not in rec.source_ids()]
        if unknown:
            raise TaskConfigError(
                f"task {name} has no source {', '.join(unknown)} (sources: "
                f"{', '.join(rec.source_ids())})",
                key="source",
            )

        def change(t: TaskRecord) -> TaskRecord | None:
            now = set(t.paused_sources)
            now = now | set(chosen) if paused else now - set(chosen)
            ordered = tuple(s for s in t.source_ids() if s in now)
            return dataclasses.replace(t, paused_sources=ordered)

        await self.mstore.update_task_fields(name, change)
        return {"result": True, "msg": "", "sources": [
            {"result": True, "msg": "", "source": s} for s in chosen
        ]}  # fmt: skip

    async def stop_sources(self, name: str, sources: list[str]) -> dict[str, Any]:
        """stop-task NAME --source S: remove sources from a running task (the seed's "source
        removed" case: a DDL lock stops waiting for them). Their checkpoints stay."""
        rec = await self._task(name)
        unknown = [s for s in sources if s not in rec.source_ids()]
        if unknown:
            raise TaskConfigError(f"task {name} has no source {', '.join(unknown)}", key="source")
        if set(sources) >= set(rec.source_ids()):
            return await self.stop(name)

        def drop(t: TaskRecord) -> TaskRecord | None:
            kept = [s for s in t.spec.get("sources", []) if s.get("source-id") not in sources]
            return dataclasses.replace(
                t, spec={**t.spec, "sources": kept},
                paused_sources=tuple(s for s in t.paused_sources if s not in sources),
            )  # fmt: skip

        await self.mstore.update_task_fields(name, drop)
        for b in await self.mstore.list_bindings(name):
            if b.source in sources:
                await self.mstore.unbind(b)
        return {"result": True, "msg": "", "sources": [
            {"result": True, "msg": "removed from the task", "source": s} for s in sources
        ]}  # fmt: skip

    async def show_ddl_locks(
        self, task: str | None = None, sources: list[str] | None = None
    ) -> dict[str, Any]:
        return await show_ddl_locks(self, task, sources)

    async def unlock_ddl_lock(
        self, lock: str, *, owner: str | None = None, force_remove: bool = False, by: str = ""
    ) -> dict[str, Any]:
        return await unlock_ddl_lock(self, lock, owner=owner, force_remove=force_remove, by=by)

    # -- query-status ----------------------------------------------------------------------

    async def query_status(self, name: str | None = None) -> dict[str, Any]:
        if name is None:
            tasks = await self.mstore.list_tasks()
            out = []
            for t in tasks:
                entries = await self._source_entries(t)
                out.append({"taskName": t.name, "taskStatus": _task_status(t, entries),
                            "sources": [e["sourceStatus"]["source"] for e in entries]})  # fmt: skip
            return {"result": True, "msg": "", "tasks": out}
        rec = await self._task(name)
        return {"result": True, "msg": "", "sources": await self._source_entries(rec)}

    async def _source_entries(self, rec: TaskRecord) -> list[dict[str, Any]]:
        bindings = {b.source: b for b in await self.mstore.list_bindings(rec.name)}
        statuses = {s.source: s for s in await self.mstore.list_statuses(rec.name)}
        spec = parse_task(rec.spec)
        positions = await asyncio.gather(
            *(self._source_position(spec, sid) for sid in rec.source_ids())
        )
        out = []
        for sid, position in zip(rec.source_ids(), positions, strict=True):
            b = bindings.get(sid)
            st = statuses.get(sid)
            if st is not None and b is not None and st.epoch != b.epoch:
                st = None  # a report from an earlier binding (a worker that lost it)
            out.append(_entry(rec, sid, b, st, position))
        return out

    async def _source_position(self, spec: TaskSpec, source_id: str) -> str:
        """The source's own current GTID position (what 'caught up' is measured against)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                server = await resolve_source(self.topo, self.mstore, spec.source(source_id))
                params = self.creds.params(server.host, server.port, query_timeout=1.5)
                async with await open_session(params) as s:
                    return (await read_server_state(s)).position
        return ""

    # -- operate-source --------------------------------------------------------------------

    async def operate_source(
        self,
        op: str,
        source_id: str | None = None,
        host: str | None = None,
        port: int | None = None,
    ) -> dict[str, Any]:
        if op == "create":
            if not (source_id and host and port):
                raise TaskConfigError("operate-source create needs a source id, host and port")
            if "/" in source_id:
                raise TaskConfigError(
                    "a shard of the topology is a source already; register external servers only",
                    key="source-id",
                )
            try:
                await self.mstore.create_source(RegisteredSource(source_id, host, port))
            except NodeExistsError:
                raise TaskConfigError(f"source {source_id} is registered already",
                                      key="source-id") from None  # fmt: skip
            return {"result": True, "msg": "", "sources": [
                {"result": True, "msg": "", "source": source_id, "worker": ""}]}  # fmt: skip
        if op == "stop":
            if not source_id:
                raise TaskConfigError("operate-source stop needs a source id")
            users = [t.name for t in await self.mstore.list_tasks() if source_id in t.source_ids()]
            if users:
                raise TaskConfigError(
                    f"source {source_id} is used by task(s) {', '.join(users)}: stop-task first",
                    key="source-id",
                )
            try:
                await self.mstore.delete_source(source_id)
            except NoNodeError:
                raise TaskConfigError(f"source {source_id} is not registered",
                                      key="source-id") from None  # fmt: skip
            return {"result": True, "msg": "", "sources": [
                {"result": True, "msg": "", "source": source_id, "worker": ""}]}  # fmt: skip
        if op == "show":
            registered = {s.source_id: s for s in await self.mstore.list_sources()}
            used: dict[str, list[tuple[str, str]]] = {}
            for b in await self.mstore.list_bindings():
                used.setdefault(b.source, []).append((b.task, b.worker))
            ids = sorted(set(registered) | set(used))
            if source_id:
                ids = [i for i in ids if i == source_id]
            return {"result": True, "msg": "", "sources": [
                {"result": True, "msg": "", "source": i,
                 "from": ({"host": registered[i].host, "port": registered[i].port}
                          if i in registered else None),
                 "tasks": [{"task": t, "worker": w} for t, w in used.get(i, [])]}
                for i in ids
            ]}  # fmt: skip
        raise TaskConfigError(f"unknown operation {op!r}: want create, stop or show", key="op")


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


def _entry(
    rec: TaskRecord, sid: str, b: Binding | None, st: SubtaskStatus | None, position: str
) -> dict[str, Any]:
    if not rec.wants_running(sid):
        stage = Stage.PAUSED
    elif st is None:
        stage = Stage.NEW
    else:
        stage = st.stage
    if st is not None and st.stage in (Stage.PAUSED, Stage.FINISHED):
        stage = st.stage
    errors = []
    if st is not None and st.error:
        e = dict(st.error)
        if "time" in e:
            e["time"] = _iso(float(e["time"]))
        errors.append(e)
    sync = dict(st.sync) if st else {}
    if sync:
        sync["masterBinlogGtid"] = position
        sync["synced"] = bool(position) and sync.get("checkpointGTID") == position
    return {
        "result": True,
        "msg": "",
        "sourceStatus": {"source": sid, "worker": b.worker if b else "", "result": None,
                         "epoch": b.epoch if b else 0},
        "subTaskStatus": [{
            "name": rec.name,
            "stage": stage,
            "unit": st.unit if st else "",
            "result": {"errors": errors} if errors else None,
            "unresolvedDDLLockID": sync.get("unresolvedDDLLockID", ""),
            "sourceAddress": st.source_address if st else "",
            "load": dict(st.load) if st else {},
            "sync": sync,
            "updatedAt": _iso(st.updated_at) if st and st.updated_at else None,
        }],
    }  # fmt: skip


def _task_status(rec: TaskRecord, entries: list[dict[str, Any]]) -> str:
    stages = [e["subTaskStatus"][0]["stage"] for e in entries]
    if any(e["subTaskStatus"][0]["result"] for e in entries):
        return "Error - Some error occurred in subtask"
    if stages and all(s == Stage.FINISHED for s in stages):
        return Stage.FINISHED
    if rec.paused_sources:
        return Stage.PAUSED
    return Stage.RUNNING


# -- sharding DDL locks (TaskOps methods live below as functions of the ops object) -----------

UNLOCK_WAIT_S = 30.0


async def show_ddl_locks(
    ops: TaskOps, task: str | None = None, sources: list[str] | None = None
) -> dict[str, Any]:
    """DM's show-ddl-locks: every lock (of `task`), only those involving `sources` if given."""
    from migration.shardddl import DdlLockStore

    locks = await DdlLockStore(ops.mstore).locks()
    if task is not None:
        if await ops.mstore.get_task(task) is None:
            raise NoSuchTaskError(task)
        locks = [lk for lk in locks if lk.task == task]
    if sources:
        locks = [lk for lk in locks if set(sources) & set(lk.sources)]
    return {"result": True, "msg": "" if locks else "no DDL lock exists",
            "locks": [lk.to_dm() for lk in locks],
            "resolved": await DdlLockStore(ops.mstore).resolved(task)}  # fmt: skip


async def unlock_ddl_lock(
    ops: TaskOps, lock: str, *, owner: str | None = None, force_remove: bool = False, by: str = ""
) -> dict[str, Any]:
    """DM's unlock-ddl-lock, for the seed's manual cases; every call is audited.

    Without --force-remove: unsynced sources are dropped (they will not reach the DDL: removed
    from the cluster), `--owner` replaces the owner (it must be synced), and the lock goes on;
    the answer waits until it is done, or reports the owner's error (the lock is kept then).
    With --force-remove: the lock is deleted whatever its state; held sources resume without
    its DDL."""
    from migration.shardddl import DdlLock, DdlLockStore, LockState, NoSuchLockError, check_unlock

    store = DdlLockStore(ops.mstore)
    current = await store.get(lock)
    if current is None:
        raise NoSuchLockError(lock)
    check_unlock(current, owner)
    audit: dict[str, object] = {"lock": lock, "owner": owner, "force_remove": force_remove,
                                "by": by, "before": current.to_dm()}  # fmt: skip
    if force_remove:
        # Infos first: a keeper pass in between must not build the lock again from them.
        await store.delete_infos(current.task, current.target)
        await store.delete(current, f"removed by force (unlock-ddl-lock by {by or 'an operator'})")
        result = {"result": True, "msg": f"lock {lock} removed by force; held sources resume "
                  "without its DDL"}  # fmt: skip
        await ops.topo.audit("unlock-ddl-lock", {**audit, "outcome": result["msg"]})
        return result
    if current.state == LockState.ERROR:
        result = {"result": False, "msg": f"the sources' DDLs disagree ({current.conflicts}): "
                  "make them agree upstream, or unlock-ddl-lock --force-remove"}  # fmt: skip
        await ops.topo.audit("unlock-ddl-lock", {**audit, "outcome": result["msg"]})
        return result

    def force_on(lk: DdlLock) -> DdlLock | None:
        changes: dict[str, object] = {}
        notes = []
        if lk.unsynced:
            changes["dropped"] = tuple(sorted({*lk.dropped, *lk.unsynced}))
            changes["unsynced"] = ()
            notes.append(f"unsynced {', '.join(lk.unsynced)} dropped")
        if owner and owner != lk.owner:
            changes["owner"] = owner
            changes["owner_done"] = False
            notes.append(f"owner {lk.owner} replaced by {owner}")
        if not notes:
            return None
        new = lk.with_note(f"unlock-ddl-lock by {by or 'an operator'}: " + "; ".join(notes),
                           **changes)  # fmt: skip
        if new.state == LockState.WAITING and new.synced:
            new = new.moved(LockState.EXECUTING, f"forced on: {new.owner} executes the DDL")
        return new

    await store.update(lock, force_on)
    outcome = await _wait_unlocked(ops, store, current)
    await ops.topo.audit("unlock-ddl-lock", {**audit, "outcome": outcome["msg"] or "done"})
    return outcome


async def _wait_unlocked(ops: TaskOps, store: Any, lock: Any) -> dict[str, Any]:
    deadline = time.monotonic() + UNLOCK_WAIT_S
    while time.monotonic() < deadline:
        now = await store.get(lock.id)
        if now is None:
            return {"result": True, "msg": ""}
        owner = next((s for s in await ops.mstore.list_statuses(lock.task)
                      if s.source == now.owner), None)  # fmt: skip
        if owner is not None and owner.error and owner.stage == Stage.PAUSED and not now.owner_done:
            return {"result": False, "msg": f"the owner {now.owner} failed to apply the DDL: "
                    f"{owner.error.get('message')}; the lock is kept (--force-remove removes it)"}  # fmt: skip
        await asyncio.sleep(0.1)
    return {"result": False, "msg": f"lock {lock.id} is not done after {UNLOCK_WAIT_S:g}s "
            "(see show-ddl-locks)"}  # fmt: skip
