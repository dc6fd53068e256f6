"""The topology store: typed records in etcd, every update compare-and-swap.

Interface contract (what callers may rely on):

- Reads return immutable records carrying the revision they were read at.
- `create_*` is create-if-absent; `update_*` is compare-and-swap on that revision and raises
  `BadVersionError` if someone wrote in between; `update_*_fields(fn)` wraps the read-modify-write
  loop so a concurrent writer costs a retry, never a lost update.
- Writes made under a shard lock pass the lock's `Fence` and are refused (`LockLostError`) once
  the lock is no longer ours.
- Every call finishes within the store's operation timeout or raises `TopoUnavailableError`.

Key layout under the root (default `/vt`):

    global/keyspaces/<ks>/Keyspace
    global/keyspaces/<ks>/shards/<shard>/Shard
    global/keyspaces/<ks>/shards/<shard>/lock
    global/workflows/<id>
    global/audit/<time_ns>
    cells/<cell>/tablets/<cell>-<uid>/Tablet
    cells/<cell>/serving/<ks>
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TypeVar

from topo.alias import TabletAlias, check_cell, check_keyspace, check_shard
from topo.errors import (
    BadVersionError,
    InvalidArgumentError,
    NodeExistsError,
    NoNodeError,
    NotLockedError,
    TopoError,
)
from topo.kv import EtcdKV, Fence, KeyValue
from topo.records import (
    Keyspace,
    LockInfo,
    Record,
    ServingEndpoint,
    Shard,
    ShardServing,
    SrvKeyspace,
    Tablet,
    TabletType,
    WorkflowRecord,
)

R = TypeVar("R", bound=Record)

CAS_RETRIES = 50


def default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class TopoStore:
    """Records of keyspaces, shards, tablets, serving graphs, locks and workflows in etcd."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        root: str = "/vt",
        op_timeout: float = 5.0,
        instance_id: str | None = None,
        lock_ttl: int = 10,
    ) -> None:
        if not root.startswith("/") or root.endswith("/"):
            raise InvalidArgumentError(f"topology root must start and not end with '/': {root!r}")
        self.kv = EtcdKV(endpoints, op_timeout=op_timeout)
        self.root = root
        self.instance_id = instance_id or default_instance_id()
        self.lock_ttl = lock_ttl
        # The tablets of the last `list_tablets()` over all cells, by key (see there).
        # The records parsed at the last full range reads (see `_reparse`), by key.
        self._tablets_read: dict[str, Record] = {}
        self._shards_read: dict[str, Record] = {}

    async def close(self) -> None:
        await self.kv.close()

    # -- keys ----------------------------------------------------------------------------

    def keyspace_key(self, ks: str) -> str:
        return f"{self.root}/global/keyspaces/{check_keyspace(ks)}/Keyspace"

    def shard_key(self, ks: str, shard: str) -> str:
        return (
            f"{self.root}/global/keyspaces/{check_keyspace(ks)}/shards/{check_shard(shard)}/Shard"
        )

    def lock_key(self, ks: str, shard: str) -> str:
        return f"{self.root}/global/keyspaces/{check_keyspace(ks)}/shards/{check_shard(shard)}/lock"

    def tablet_key(self, alias: str | TabletAlias) -> str:
        a = alias if isinstance(alias, TabletAlias) else TabletAlias.parse(alias)
        return f"{self.root}/cells/{a.cell}/tablets/{a}/Tablet"

    def srv_keyspace_key(self, cell: str, ks: str) -> str:
        return f"{self.root}/cells/{check_cell(cell)}/serving/{check_keyspace(ks)}"

    def workflow_key(self, wf_id: str) -> str:
        if not wf_id or "/" in wf_id:
            raise InvalidArgumentError(f"malformed workflow id {wf_id!r}")
        return f"{self.root}/global/workflows/{wf_id}"

    # -- generic record operations -------------------------------------------------------

    async def _get(self, key: str, cls: type[R], what: str) -> R:
        kv = await self.kv.get(key)
        if kv is None:
            raise NoNodeError(what)
        return cls.from_json(kv.value, revision=kv.mod_revision)

    async def _create(self, key: str, rec: R, fence: Fence | None = None) -> R:
        kv = await self.kv.create(key, rec.to_json(), fence=fence)
        return rec.with_revision(kv.mod_revision)

    async def _update(self, key: str, rec: R, fence: Fence | None = None) -> R:
        if rec.revision <= 0:
            raise InvalidArgumentError(f"update of {key} needs a record read from the store")
        kv = await self.kv.update(key, rec.to_json(), rec.revision, fence=fence)
        return rec.with_revision(kv.mod_revision)

    async def _update_fields(
        self,
        key: str,
        cls: type[R],
        what: str,
        fn: Callable[[R], R | None],
        fence: Fence | None = None,
    ) -> R:
        rec = await update_record(self.kv, key, cls, what, fn, fence=fence)
        assert rec is not None
        return rec

    async def _list(self, prefix: str, suffix: str, cls: type[R]) -> list[R]:
        return [
            cls.from_json(kv.value, revision=kv.mod_revision)
            for kv in await self.kv.get_prefix(prefix)
            if kv.key.endswith(suffix)
        ]

    # -- keyspaces -----------------------------------------------------------------------

    async def create_keyspace(self, ks: Keyspace) -> Keyspace:
        return await self._create(self.keyspace_key(ks.name), ks)

    async def get_keyspace(self, name: str) -> Keyspace:
        return await self._get(self.keyspace_key(name), Keyspace, f"keyspace {name}")

    async def list_keyspaces(self) -> list[Keyspace]:
        return await self._list(f"{self.root}/global/keyspaces/", "/Keyspace", Keyspace)

    async def update_keyspace_fields(
        self, name: str, fn: Callable[[Keyspace], Keyspace | None]
    ) -> Keyspace:
        return await self._update_fields(self.keyspace_key(name), Keyspace, f"keyspace {name}", fn)

    # -- shards --------------------------------------------------------------------------

    async def create_shard(self, shard: Shard) -> Shard:
        await self.get_keyspace(shard.keyspace)
        if "-" in shard.name and not (shard.key_range_start or shard.key_range_end):
            start, end = shard.name.split("-")
            shard = Shard.from_dict(
                {**shard.to_dict(), "key_range_start": start, "key_range_end": end}
            )
        return await self._create(self.shard_key(shard.keyspace, shard.name), shard)

    async def get_shard(self, ks: str, shard: str) -> Shard:
        return await self._get(self.shard_key(ks, shard), Shard, f"shard {ks}/{shard}")

    async def list_shards(self, ks: str) -> list[Shard]:
        await self.get_keyspace(ks)
        prefix = f"{self.root}/global/keyspaces/{check_keyspace(ks)}/shards/"
        return await self._list(prefix, "/Shard", Shard)

    async def update_shard(self, shard: Shard, fence: Fence | None = None) -> Shard:
        return await self._update(self.shard_key(shard.keyspace, shard.name), shard, fence)

    async def update_shard_fields(
        self, ks: str, shard: str, fn: Callable[[Shard], Shard | None], fence: Fence | None = None
    ) -> Shard:
        return await self._update_fields(
            self.shard_key(ks, shard), Shard, f"shard {ks}/{shard}", fn, fence
        )

    # -- tablets -------------------------------------------------------------------------

    async def create_tablet(self, tablet: Tablet) -> Tablet:
        await self.get_shard(tablet.keyspace, tablet.shard)
        return await self._create(self.tablet_key(tablet.alias), tablet)

    async def get_tablet(self, alias: str | TabletAlias) -> Tablet:
        return await self._get(self.tablet_key(alias), Tablet, f"tablet {alias}")

    async def update_tablet(self, tablet: Tablet, fence: Fence | None = None) -> Tablet:
        return await self._update(self.tablet_key(tablet.alias), tablet, fence)

    async def update_tablet_fields(
        self, alias: str, fn: Callable[[Tablet], Tablet | None], fence: Fence | None = None
    ) -> Tablet:
        return await self._update_fields(
            self.tablet_key(alias), Tablet, f"tablet {alias}", fn, fence
        )

    async def delete_tablet(self, alias: str) -> None:
        try:
            await self.kv.delete(self.tablet_key(alias))
        except NoNodeError:
            raise NoNodeError(f"tablet {alias}") from None

    async def list_cells(self) -> list[str]:
        kvs = await self.kv.get_prefix(f"{self.root}/cells/", keys_only=True)
        prefix_len = len(f"{self.root}/cells/")
        return sorted({kv.key[prefix_len:].split("/", 1)[0] for kv in kvs})

    async def list_tablets(
        self,
        *,
        keyspace: str | None = None,
        shard: str | None = None,
        cell: str | None = None,
        type: TabletType | None = None,
    ) -> list[Tablet]:
        """All tablets matching the filters, sorted by alias.

        Without a cell, one range read over every cell (the health checks list all tablets
        every cycle; reading the cell names first would transfer every record twice)."""
        if cell:
            out = await self._list(
                f"{self.root}/cells/{check_cell(cell)}/tablets/", "/Tablet", Tablet
            )
        else:
            out = await self._list_all_tablets()
        return sorted(
            (
                t
                for t in out
                if (keyspace is None or t.keyspace == keyspace)
                and (shard is None or t.shard == shard)
                and (type is None or t.type == type)
            ),
            key=lambda t: t.tablet_alias,
        )

    async def _list_all_tablets(self) -> list[Tablet]:
        """Every tablet of every cell. A record whose key still has the mod_revision it had at
        the previous call is the record parsed then (records are immutable; a key's value at
        one mod_revision never changes), so a fleet that did not change costs one read and no
        JSON parsing."""
        prefix = f"{self.root}/cells/"
        previous: dict[str, Record] = self._tablets_read
        current: dict[str, Record] = {}
        tablets = [
            _reparse(previous, current, kv, Tablet)
            for kv in await self.kv.get_prefix(prefix)
            if _is_tablet_key(kv.key[len(prefix) :])
        ]
        self._tablets_read = current
        return tablets

    async def shard_tablets(self, ks: str, shard: str) -> tuple[list[Tablet], list[str]]:
        """The tablets of one shard, reading cell by cell; a cell that cannot be read is
        reported (second item) rather than failing the whole read, as TER needs."""
        tablets: list[Tablet] = []
        unreadable: list[str] = []
        for c in await self.list_cells():
            try:
                found = await self._list(f"{self.root}/cells/{c}/tablets/", "/Tablet", Tablet)
            except TopoError:
                unreadable.append(c)
                continue
            tablets.extend(t for t in found if t.keyspace == ks and t.shard == shard)
        return sorted(tablets, key=lambda t: t.tablet_alias), unreadable

    # -- serving graph -------------------------------------------------------------------

    async def get_srv_keyspace(self, cell: str, ks: str) -> SrvKeyspace:
        return await self._get(
            self.srv_keyspace_key(cell, ks), SrvKeyspace, f"serving graph {cell}/{ks}"
        )

    async def rebuild_serving_graph(self, ks: str, fence: Fence | None = None) -> list[SrvKeyspace]:
        """Recompute the serving graph of `ks` in every cell from Shard and Tablet records.

        The graph is derived state, so rebuilding from the records is always correct, provided
        a rebuild that read older records never lands after one that read newer ones. Each
        attempt therefore reads the current graphs first and the records after, and writes
        each graph only if it has not changed since it was read; otherwise it starts over.
        Whoever updates a record rebuilds afterwards, so the last rebuild to start sees the
        newest records and is the one that sticks.
        """
        for _ in range(CAS_RETRIES):
            cells = await self.list_cells()
            seen = {c: await self.kv.get(self.srv_keyspace_key(c, ks)) for c in cells}
            shards = await self.list_shards(ks)
            tablets = await self.list_tablets(keyspace=ks)
            by_alias = {t.alias: t for t in tablets}
            out: list[SrvKeyspace] = []
            try:
                for cell in sorted({t.cell for t in tablets}):
                    graph = SrvKeyspace(
                        keyspace=ks,
                        cell=cell,
                        shards=tuple(_serving_shard(s, by_alias, tablets, cell) for s in shards),
                    )
                    out.append(await self._put_srv_keyspace(graph, seen.get(cell), fence))
            except (BadVersionError, NodeExistsError):
                continue
            return out
        raise BadVersionError(f"serving graph of {ks}", -1)

    async def _put_srv_keyspace(
        self, graph: SrvKeyspace, seen: KeyValue | None, fence: Fence | None
    ) -> SrvKeyspace:
        """Write `graph` unless it is already there; compare-and-swap against `seen`."""
        key = self.srv_keyspace_key(graph.cell, graph.keyspace)
        if seen is None:
            return await self._create(key, graph, fence)
        if SrvKeyspace.from_json(seen.value) == graph:
            return graph.with_revision(seen.mod_revision)
        return await self._update(key, graph.with_revision(seen.mod_revision), fence)

    async def watch_srv_keyspace(self, cell: str, ks: str) -> AsyncIterator[SrvKeyspace | None]:
        """The current serving graph, then every new version of it as it changes (no polling).

        Yields None while the graph does not exist.
        """
        key = self.srv_keyspace_key(cell, ks)
        kv = await self.kv.get(key)
        start = kv.mod_revision + 1 if kv else await self.kv.revision() + 1
        yield SrvKeyspace.from_json(kv.value, revision=kv.mod_revision) if kv else None
        async for ev in self.kv.watch(key, start_revision=start):
            if ev.value is None:
                yield None
            else:
                yield SrvKeyspace.from_json(ev.value, revision=ev.mod_revision)

    # -- locks (see topo.lock for taking them) ---------------------------------------------

    async def list_shards_and_locks(self) -> tuple[list[Keyspace], list[Shard], list[LockInfo]]:
        """Every keyspace, shard and held shard lock from one range read (the health checks read
        them every cycle; `list_keyspaces`, `list_shards` per keyspace and `list_locks` would
        each read the whole tree again). Shards are sorted by key; a shard whose keyspace record
        is missing is left out, as `list_shards` would."""
        prefix = f"{self.root}/global/keyspaces/"
        keyspaces: list[Keyspace] = []
        shards: list[Shard] = []
        locks: list[LockInfo] = []
        previous: dict[str, Record] = self._shards_read
        current: dict[str, Record] = {}
        for kv in await self.kv.get_prefix(prefix):
            parts = kv.key[len(prefix) :].split("/")
            if len(parts) == 2 and parts[1] == "Keyspace":
                keyspaces.append(_reparse(previous, current, kv, Keyspace))
            elif len(parts) == 4 and parts[1] == "shards" and parts[3] == "Shard":
                shards.append(_reparse(previous, current, kv, Shard))
            elif len(parts) == 4 and parts[1] == "shards" and parts[3] == "lock":
                locks.append(_lock_info(kv))
        self._shards_read = current
        names = {k.name for k in keyspaces}
        shards = sorted((s for s in shards if s.keyspace in names), key=lambda s: s.key)
        return keyspaces, shards, locks

    async def list_locks(self) -> list[LockInfo]:
        """Every shard lock currently held, with its holder and action."""
        return (await self.list_shards_and_locks())[2]

    async def get_lock(self, ks: str, shard: str) -> LockInfo | None:
        kv = await self.kv.get(self.lock_key(ks, shard))
        return _lock_info(kv) if kv else None

    async def force_unlock(self, ks: str, shard: str, *, reason: str, by: str) -> LockInfo:
        """Break a shard lock held by someone else (an operator's last resort); audited.

        Revoking the holder's lease deletes the key, and the holder's next fenced write fails.
        """
        info = await self.get_lock(ks, shard)
        if info is None:
            raise NotLockedError(f"shard {ks}/{shard} is not locked")
        if info.lease_id:
            await self.kv.revoke_lease(info.lease_id)  # deletes the key with the lease
        else:
            with contextlib.suppress(NoNodeError, BadVersionError):
                await self.kv.delete(self.lock_key(ks, shard), info.revision)
        details = {"keyspace": ks, "shard": shard, "reason": reason, "by": by}
        await self.audit("UnlockShard", {**details, "holder": info.to_dict()})
        return info

    # -- workflows and audit -------------------------------------------------------------

    async def create_workflow(self, rec: WorkflowRecord) -> WorkflowRecord:
        return await self._create(self.workflow_key(rec.id), rec)

    async def get_workflow(self, wf_id: str) -> WorkflowRecord:
        return await self._get(self.workflow_key(wf_id), WorkflowRecord, f"workflow {wf_id}")

    async def update_workflow(
        self, rec: WorkflowRecord, fence: Fence | None = None
    ) -> WorkflowRecord:
        return await self._update(self.workflow_key(rec.id), rec, fence)

    async def list_workflows(self) -> list[WorkflowRecord]:
        recs = await self._list(f"{self.root}/global/workflows/", "", WorkflowRecord)
        return sorted(recs, key=lambda r: r.created_at)

    async def audit(self, action: str, details: dict[str, object]) -> None:
        """Append an audit entry (operator actions that bypass safety, such as force unlock)."""
        ts = time.time_ns()
        body = json.dumps({"action": action, "time_ns": ts, **details}, sort_keys=True).encode()
        await self.kv.create(f"{self.root}/global/audit/{ts:020d}", body)

    async def list_audit(self) -> list[dict[str, object]]:
        return [
            json.loads(kv.value) for kv in await self.kv.get_prefix(f"{self.root}/global/audit/")
        ]


async def update_record(
    kv: EtcdKV,
    key: str,
    cls: type[R],
    what: str,
    fn: Callable[[R], R | None],
    *,
    fence: Fence | None = None,
    missing_ok: bool = False,
) -> R | None:
    """The one read-modify-write loop of every record store: read, apply `fn`, compare-and-
    swap on the revision read; on a conflict start over from a fresh read, so a concurrent
    writer costs a retry, never a lost update.

    `fn` returns the new record, or None when nothing needs to change (no write then). A
    missing record is NoNodeError(`what`), or None with `missing_ok`."""
    for _ in range(CAS_RETRIES):
        kv_read = await kv.get(key)
        if kv_read is None:
            if missing_ok:
                return None
            raise NoNodeError(what)
        current = cls.from_json(kv_read.value, revision=kv_read.mod_revision)
        new = fn(current)
        if new is None or new == current:
            return current
        try:
            written = await kv.update(key, new.to_json(), current.revision, fence=fence)
        except BadVersionError:
            continue
        return new.with_revision(written.mod_revision)
    raise BadVersionError(what, -1)


def _is_tablet_key(rel: str) -> bool:
    """`<cell>/tablets/<alias>/Tablet` (relative to the cells prefix)?"""
    parts = rel.split("/")
    return len(parts) == 4 and parts[1] == "tablets" and parts[3] == "Tablet"


def _reparse(
    previous: dict[str, Record], current: dict[str, Record], kv: KeyValue, cls: type[R]
) -> R:
    """The record at `kv`, parsed; taken from `previous` (the last range read's records, by key)
    when the key still has the mod_revision it had then: a key's value at one mod_revision never
    changes, so an unchanged fleet read every health cycle costs one read and no JSON parsing.
    Every record returned is put into `current`, which the caller keeps for the next read."""
    record = previous.get(kv.key)
    if not isinstance(record, cls) or record.revision != kv.mod_revision:
        record = cls.from_json(kv.value, revision=kv.mod_revision)
    current[kv.key] = record
    return record


def _lock_info(kv: KeyValue) -> LockInfo:
    info = LockInfo.from_json(kv.value, revision=kv.mod_revision)
    return dataclasses.replace(info, create_revision=kv.create_revision, lease_id=kv.lease)


def _endpoint(t: Tablet) -> ServingEndpoint:
    return ServingEndpoint(alias=t.alias, host=t.mysql_host, port=t.mysql_port)


def _serving_shard(
    shard: Shard, by_alias: dict[str, Tablet], tablets: list[Tablet], cell: str
) -> ShardServing:
    primary = by_alias.get(shard.primary_alias) if shard.primary_alias else None
    replicas = tuple(
        _endpoint(t)
        for t in tablets
        if t.shard == shard.name and t.cell == cell and t.type == TabletType.REPLICA
    )
    return ShardServing(
        name=shard.name,
        key_range_start=shard.key_range_start,
        key_range_end=shard.key_range_end,
        primary=_endpoint(primary) if primary else None,
        primary_serving=bool(primary) and shard.is_primary_serving,
        replicas=replicas,
    )
