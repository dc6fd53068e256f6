"""What each console page shows, as one JSON-able document built from the same views as the API
(`orchestrator.views`), so the page and `curl` never disagree.

A page's document is rebuilt whenever the topology in etcd changes or a health cycle ends (see
`orchestrator.console.stream`); each builder reads a handful of keys, the tablets' health comes
from the checker's memory.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator import views
from topo.errors import NoNodeError
from topo.records import WorkflowRecord

if TYPE_CHECKING:
    from orchestrator.service import Service

log = structlog.get_logger(__name__)

JOURNAL_TIMEOUT_S = 1.0
WORKFLOW_HISTORY = 30
RECOVERY_HISTORY = 30


async def fleet(service: Service) -> dict[str, Any]:
    """Keyspaces -> shards (primary, serving, durability, lock, problems, recovery paused), the
    tablets of each shard, and the migration panels when there is something to show."""
    keyspaces, shard_recs, locks = await service.store.list_shards_and_locks()
    tablets = (await views.tablets_with_health(service))["tablets"]
    rec = await views.recoveries(service, limit=RECOVERY_HISTORY)
    lock_by_key = {f"{lk.keyspace}/{lk.shard}": views.lock_doc(lk) for lk in locks}
    out = []
    for k in sorted(keyspaces, key=lambda k: k.name):
        shards = []
        for s in (s for s in shard_recs if s.keyspace == k.name):
            shards.append({
                "name": s.name,
                "primary": s.primary_alias,
                "serving": s.is_primary_serving,
                "lock": lock_by_key.get(s.key),
                "recovery": rec["shards"].get(s.key, {}),
                "tablets": [_tablet_brief(t) for t in tablets
                            if (t["keyspace"], t["shard"]) == (k.name, s.name)],
            })  # fmt: skip
        out.append({"name": k.name, "durability": k.durability_policy.value,
                    "auto_recovery": k.auto_recovery, "shards": shards})  # fmt: skip
    return {
        "page": "fleet",
        "leader": {"is_leader": rec["is_leader"], "leader_id": rec["leader_id"],
                   "instance_id": rec["instance_id"]},
        "keyspaces": out,
        "recoveries": rec["recoveries"][:10],
        **await migration(service),
    }  # fmt: skip


def _tablet_brief(t: dict[str, Any]) -> dict[str, Any]:
    return {"alias": t["alias"], "type": t["type"], "healthy": t["healthy"],
            "maintenance": t["maintenance"] is not None}  # fmt: skip


async def migration(service: Service) -> dict[str, Any]:
    """query-status per subtask and show-ddl-locks: empty lists when there are none (the page
    then leaves the panels out)."""
    tasks: list[dict[str, Any]] = []
    locks: list[dict[str, Any]] = []
    try:
        summary = await service.migration.query_status(None)
        for t in summary.get("tasks", []):
            detail = await service.migration.query_status(t["taskName"])
            tasks.append({"name": t["taskName"], "status": t["taskStatus"],
                          "sources": detail.get("sources", [])})  # fmt: skip
        locks = (await service.migration.show_ddl_locks()).get("locks", [])
    except Exception as e:  # a panel that cannot be read must not take the page down
        log.warning("console: migration status unreadable", error=str(e) or repr(e))
    return {"migration_tasks": tasks, "ddl_locks": locks}


def workflow_doc(rec: WorkflowRecord, *, steps: bool) -> dict[str, Any]:
    """A workflow run for a person: what, where, how it ended, how long, the write
    unavailability it caused, and (when asked) its steps."""
    result = rec.result or {}
    end = rec.updated_at if rec.status.value != "running" else time.time()
    doc: dict[str, Any] = {
        "id": rec.id,
        "action": rec.action,
        "keyspace": rec.keyspace,
        "shard": rec.shard,
        "status": rec.status.value,
        "created_at": rec.created_at,
        "duration_ms": result.get("duration_ms") or round((end - rec.created_at) * 1000, 1),
        "write_unavailable_ms": result.get("write_unavailable_ms"),
        "unavailable_window_ms": result.get("unavailable_window_ms"),
        "summary": result.get("summary") or rec.error,
        "error": rec.error,
    }
    if steps:
        doc["steps"] = [s.to_dict() for s in rec.steps]
    return doc


async def workflows(
    service: Service, keyspace: str | None = None, shard: str | None = None
) -> dict[str, Any]:
    """Running runs with their steps (as recorded step by step in etcd), then the history."""
    recs = sorted(await service.store.list_workflows(), key=lambda r: r.created_at, reverse=True)
    recs = [r for r in recs if keyspace is None or (r.keyspace, r.shard) == (keyspace, shard)]
    running = [workflow_doc(r, steps=True) for r in recs if r.status.value == "running"]
    history = [
        workflow_doc(r, steps=i < 3)
        for i, r in enumerate(r for r in recs if r.status.value != "running")
    ][:WORKFLOW_HISTORY]
    return {"running": running, "history": history}


async def workflows_page(service: Service) -> dict[str, Any]:
    return {"page": "workflows", **await workflows(service)}


async def recoveries_page(service: Service) -> dict[str, Any]:
    rec = await views.recoveries(service, limit=100)
    return {"page": "recoveries", **rec}


class ShardPage:
    """The shard page's document; keeps the reparent journal between pushes (it is read from
    the primary's MySQL, so only again when the shard record or its workflows changed)."""

    def __init__(self, service: Service, keyspace: str, shard: str) -> None:
        self.service, self.keyspace, self.shard = service, keyspace, shard
        self._journal_key: tuple[Any, ...] | None = None
        self._journal: dict[str, Any] = {"entries": [], "error": None}

    async def build(self) -> dict[str, Any]:
        service, ks, name = self.service, self.keyspace, self.shard
        try:
            shard = await views.shard(service, ks, name)
        except NoNodeError:
            return {"page": "shard", "keyspace": ks, "shard": name, "missing": True}
        tablets = (await views.tablets_with_health(service, keyspace=ks, shard=name))["tablets"]
        rec = await views.recoveries(service, keyspace=ks, shard=name, limit=RECOVERY_HISTORY)
        wfs = await workflows(service, ks, name)
        newest = wfs["history"][0]["id"] if wfs["history"] else None
        await self._read_journal((shard["revision"], newest, shard["primary_alias"]))
        keyspace = await service.store.get_keyspace(ks)
        return {
            "page": "shard",
            "keyspace": ks,
            "shard": name,
            "durability": keyspace.durability_policy.value,
            "primary": shard["primary_alias"],
            "serving": shard["is_primary_serving"],
            "lock": shard["lock"],
            "recovery": shard["recoveries"],
            # Every instance's analysis (with the shards shared, another may own this one).
            "problems": (await views.fleet_health(service))[1].get(f"{ks}/{name}", []),
            "tablets": tablets,
            "now": time.time(),
            "recoveries": rec["recoveries"],
            "recovery_state": rec["shards"].get(f"{ks}/{name}", {}),
            "workflows": wfs,
            "journal": self._journal,
        }

    async def _read_journal(self, key: tuple[Any, ...]) -> None:
        if key == self._journal_key:
            return
        self._journal_key = key
        try:
            async with asyncio.timeout(JOURNAL_TIMEOUT_S):
                doc = await views.journal(self.service, self.keyspace, self.shard, 10)
            self._journal = {"entries": doc["entries"], "primary": doc["primary"], "error": None}
        except Exception as e:  # no primary, or it does not answer: say so, read at next change
            self._journal = {**self._journal, "error": str(e) or type(e).__name__}
