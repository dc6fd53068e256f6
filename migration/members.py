"""Cluster membership, DM's names: list-member, offline-member, transfer-source.

Keys under the topology root (each instance and worker writes only its own):

    global/members/masters/<instance-id>      MasterRecord, on the instance's lease
    global/members/offline/<type>/<name>      an offline-member request for a master or worker
    global/election                           the leader (`orchestrator.election`)
    global/migration/workers/<name>           WorkerRecord (`migration.store`)

Operations:

1. `list_members`: service instances ("masters") with the leader marked, and workers with
   their state: `bound` (it runs subtasks), `free`, `draining`, or `offline` (a binding names
   a worker whose key is gone: the leader rebinds it in a moment).
2. `offline_member`: writes the request; the named process acts on it itself (a worker
   drains, `migration.worker` step 5; a leading master resigns and holds off campaigning,
   `orchestrator.election`), then deletes the request. The call waits for that (a bound).
3. `transfer_source`: rebinds every subtask of a source to a named live worker that is not
   draining, each a compare-and-swap with a new epoch: the old worker is fenced downstream and
   stops on its next look at the bindings, the new one claims the checkpoint and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from migration.store import MigrationStore
from topo.errors import BadVersionError, InvalidArgumentError, NodeExistsError, NoNodeError
from topo.kv import EtcdKV
from topo.records import Record

MEMBER_TYPES = ("master", "worker")


@dataclass(frozen=True)
class MasterRecord(Record):
    """A live service instance; the key is bound to its lease."""

    KIND: ClassVar[str] = "service instance"
    name: str
    address: str = ""
    version: str = ""
    started_at: float = 0.0


class MemberStore:
    def __init__(self, kv: EtcdKV, root: str) -> None:
        self.kv = kv
        self.root = root
        self.prefix = f"{root}/global/members/"

    def master_key(self, name: str) -> str:
        return f"{self.prefix}masters/{name}"

    def offline_key(self, kind: str, name: str) -> str:
        return f"{self.prefix}offline/{kind}/{name}"

    async def register_master(self, rec: MasterRecord, lease: int) -> None:
        await self.kv.put(self.master_key(rec.name), rec.to_json(), lease=lease)

    async def list_masters(self) -> list[MasterRecord]:
        kvs = await self.kv.get_prefix(f"{self.prefix}masters/")
        recs = [MasterRecord.from_json(kv.value, revision=kv.mod_revision) for kv in kvs]
        return sorted(recs, key=lambda r: r.name)

    async def leader(self) -> str | None:
        kv = await self.kv.get(f"{self.root}/global/election")
        if kv is None:
            return None
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(kv.value).get("instance_id"))
        return None

    async def request_offline(self, kind: str, name: str) -> None:
        body = json.dumps({"requested_at": time.time()}).encode()
        await self.kv.put(self.offline_key(kind, name), body)

    async def clear_offline_request(self, kind: str, name: str) -> None:
        with contextlib.suppress(NoNodeError):
            await self.kv.delete(self.offline_key(kind, name))

    async def wait_offline_request(self, kind: str, name: str) -> None:
        """Returns when an offline-member request for this member exists."""
        key = self.offline_key(kind, name)
        while True:
            start = await self.kv.revision() + 1
            if await self.kv.get(key) is not None:
                return
            async for ev in self.kv.watch(key, start_revision=start):
                if ev.value is not None:
                    return


def _state(name: str, live: dict[str, Any], bound: dict[str, list[str]]) -> str:
    if name not in live:
        return "offline"
    if live[name].draining:
        return "draining"
    return "bound" if bound.get(name) else "free"


async def list_members(
    mstore: MigrationStore,
    members: MemberStore,
    *,
    leader: bool = False,
    master: bool = False,
    worker: bool = False,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """1. DM's list-member shape: one entry per kind asked for (all when none is)."""
    everything = not (leader or master or worker)
    wanted = set(names or ())
    now = time.time()
    masters, leader_id, workers, bindings = await asyncio.gather(
        members.list_masters(), members.leader(), mstore.list_workers(), mstore.list_bindings()
    )
    out: list[dict[str, Any]] = []
    if everything or leader:
        out.append({"leader": {"name": leader_id or "",
                               "addr": next((m.address for m in masters if m.name == leader_id),
                                            "")}})  # fmt: skip
    if everything or master:
        out.append({"master": {"msg": "", "masters": [
            {"name": m.name, "addr": m.address, "alive": True, "leader": m.name == leader_id,
             "version": m.version, "uptime_s": round(now - m.started_at, 1)}
            for m in masters if not wanted or m.name in wanted
        ]}})  # fmt: skip
    if everything or worker:
        live = {w.name: w for w in workers}
        bound: dict[str, list[str]] = {}
        for b in sorted(bindings, key=lambda b: (b.task, b.source)):
            bound.setdefault(b.worker, []).append(f"{b.task}/{b.source}")
        rows = []
        for name in sorted(set(live) | set(bound)):
            if wanted and name not in wanted:
                continue
            w = live.get(name)
            rows.append({
                "name": name, "addr": w.address if w else "", "stage": _state(name, live, bound),
                "source": ",".join(sorted({s.split("/", 1)[1] for s in bound.get(name, [])})),
                "subtasks": bound.get(name, []), "version": w.version if w else "",
                "uptime_s": round(now - w.started_at, 1) if w and w.started_at else None,
            })  # fmt: skip
        out.append({"worker": {"msg": "", "workers": rows}})
    return {"result": True, "msg": "", "members": out}


async def offline_member(
    mstore: MigrationStore, members: MemberStore, kind: str, name: str, *, timeout: float = 10.0
) -> dict[str, Any]:
    """2. Ask the member to go offline and wait until it did (its request is gone and, for a
    worker, its key; for a master, it no longer leads)."""
    if kind not in MEMBER_TYPES:
        raise InvalidArgumentError(f"offline-member: --type must be one of {MEMBER_TYPES}")
    if kind == "worker":
        if name not in {w.name for w in await mstore.list_workers()}:
            raise NoNodeError(f"live worker {name}")
    elif name not in {m.name for m in await members.list_masters()}:
        raise NoNodeError(f"live service instance {name}")
    was_leader = kind == "master" and await members.leader() == name
    started = time.monotonic()
    await members.request_offline(kind, name)

    async def done() -> bool:
        if kind == "worker":
            return name not in {w.name for w in await mstore.list_workers()}
        return await members.kv.get(members.offline_key(kind, name)) is None and (
            await members.leader() != name
        )

    try:
        async with asyncio.timeout(timeout):
            while True:
                if await done():
                    break
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise InvalidArgumentError(
            f"offline-member: {kind} {name} did not go offline within {timeout:.0f}s"
        ) from None
    finally:  # never left behind for a later process of the same name
        await members.clear_offline_request(kind, name)
    msg = f"{kind} {name} is offline"
    if kind == "master":
        msg = f"master {name} resigned the leadership" if was_leader else (
            f"master {name} was not the leader: nothing to resign")  # fmt: skip
    return {"result": True, "msg": msg, "took_s": round(time.monotonic() - started, 3)}


async def transfer_source(mstore: MigrationStore, source: str, worker: str) -> dict[str, Any]:
    """3. Every subtask of `source` to `worker`, each with a new epoch."""
    live = {w.name: w for w in await mstore.list_workers()}
    if worker not in live:
        raise NoNodeError(f"live worker {worker}")
    if live[worker].draining:
        raise InvalidArgumentError(f"transfer-source: worker {worker} is draining")
    bindings = [b for b in await mstore.list_bindings() if b.source == source]
    if not bindings:
        raise NoNodeError(f"a bound subtask of source {source}")
    moved = []
    for b in bindings:
        if b.worker == worker:
            continue
        try:
            nb = await mstore.bind(b.task, b.source, worker, b)
        except (BadVersionError, NodeExistsError):
            raise InvalidArgumentError(
                f"transfer-source: {b.task}/{source} was rebound meanwhile; try again"
            ) from None
        moved.append({"task": b.task, "from": b.worker, "to": worker, "epoch": nb.epoch})
    return {"result": True, "msg": "", "source": source, "worker": worker, "moved": moved}
