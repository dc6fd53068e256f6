"""What the API shows: topology records and live state as JSON-able dicts.

Shared by the GET routes and the Get*/Show* commands, so a record looks the same whichever way
it was asked for. Every function takes the service and raises the topology's own errors (the API
maps them to statuses in one place, `orchestrator.errors`).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import TYPE_CHECKING, Any

import structlog

from mysqlctl.errors import MysqlError
from topo.errors import TopoError
from topo.records import LockInfo, Record, Tablet, TabletType, WorkflowRecord
from workflows.errors import PreconditionError

if TYPE_CHECKING:
    from orchestrator.service import Service

log = structlog.get_logger(__name__)


def record(rec: Record) -> dict[str, Any]:
    """A record as stored, plus the etcd revision it was read at (for compare-and-swap)."""
    return {**rec.to_dict(), "revision": rec.revision}


async def keyspaces(service: Service) -> dict[str, Any]:
    recs = await service.store.list_keyspaces()
    return {"keyspaces": [record(k) for k in sorted(recs, key=lambda k: k.name)]}


async def keyspaces_with_shards(service: Service) -> dict[str, Any]:
    keyspaces, shard_recs, _ = await service.store.list_shards_and_locks()
    return {
        "keyspaces": [
            {**record(k), "shards": sorted(s.name for s in shard_recs if s.keyspace == k.name)}
            for k in sorted(keyspaces, key=lambda k: k.name)
        ]
    }


async def tablets_with_health(
    service: Service,
    *,
    keyspace: str | None = None,
    shard: str | None = None,
    cell: str | None = None,
) -> dict[str, Any]:
    """Every tablet with its latest health check, its replication source by alias and its
    problems: what `ctl GetTablets` shows as a table."""
    if keyspace is not None:
        await service.store.get_keyspace(keyspace)
    recs = await service.store.list_tablets(keyspace=keyspace, shard=shard, cell=cell)
    # The whole fleet's checks (each instance checks its share of the shards).
    snap, problems, _ = await fleet_health(service)
    by_address = {t.address: t.alias for t in await service.store.list_tablets()}
    shard_primaries: dict[str, str | None] = {}
    out = []
    for t in recs:
        key = f"{t.keyspace}/{t.shard}"
        if key not in shard_primaries:
            try:
                shard_primaries[key] = (
                    await service.store.get_shard(t.keyspace, t.shard)
                ).primary_alias
            except Exception:
                shard_primaries[key] = None
        h = snap.get(t.alias) or {}
        source = h.get("replicating_from")
        out.append({
            **record(t),
            "cell": t.cell,
            "address": t.address,
            "is_shard_primary": shard_primaries[key] == t.alias,
            "healthy": h.get("healthy"),
            "error": h.get("error"),
            "read_only": h.get("read_only"),
            "source": by_address.get(source, source) if source else None,
            "io_running": h.get("io_running"),
            "io_state": h.get("io_state"),
            "sql_running": h.get("sql_running"),
            "lag_seconds": h.get("lag_seconds"),
            "position": h.get("position"),
            "checked_at": h.get("checked_at"),
            "maintenance": maintenance_doc(t),
            "problems": [
                {"kind": p["kind"], "detail": p["detail"]}
                for p in problems.get(key, []) if p["tablet"] == t.alias
            ],
        })  # fmt: skip
    return {"tablets": out}


async def keyspace(service: Service, ks: str) -> dict[str, Any]:
    store = service.store
    rec = await store.get_keyspace(ks)
    shards = await store.list_shards(ks)
    return {**record(rec), "shards": sorted(s.name for s in shards)}


async def shards(service: Service, ks: str) -> dict[str, Any]:
    recs = await service.store.list_shards(ks)
    return {"keyspace": ks, "shards": [record(s) for s in sorted(recs, key=lambda s: s.name)]}


async def shard(service: Service, ks: str, name: str) -> dict[str, Any]:
    """The Shard record (primary, serving state) with its tablets and its lock, if held."""
    store = service.store
    rec = await store.get_shard(ks, name)
    tablets, unreadable = await store.shard_tablets(ks, name)
    lock = await store.get_lock(ks, name)
    return {
        **record(rec),
        "tablets": [
            {
                "alias": t.alias,
                "type": t.type.value,
                "cell": t.cell,
                "mysql_host": t.mysql_host,
                "mysql_port": t.mysql_port,
                "maintenance": maintenance_doc(t),
            }
            for t in tablets
        ],
        "unreadable_cells": unreadable,
        "lock": lock_doc(lock) if lock else None,
        "recoveries": await shard_recoveries(service, ks, name),
    }


async def shard_recoveries(service: Service, ks: str, name: str) -> dict[str, Any]:
    """Whether the leader would recover this shard automatically, and if not, why."""
    from orchestrator.health.control import load

    control = await load(service.store)
    keyspace_rec = await service.store.get_keyspace(ks)
    scope: str | None = None
    reason: str | None = None
    if not service.settings.recoveries_enabled:
        scope, reason = "setting", "recoveries are disabled (recoveries_enabled=false)"
    elif (paused := control.paused(ks, name, keyspace_rec)) is not None:
        scope, reason = paused
    return {"enabled": scope is None, "paused_scope": scope, "reason": reason,
            "auto_recovery": keyspace_rec.auto_recovery}  # fmt: skip


def maintenance_doc(t: Tablet) -> dict[str, Any] | None:
    from workflows.common import maintenance_of

    window = maintenance_of(t)
    return window.to_dict() if window is not None else None


async def tablets(
    service: Service,
    *,
    keyspace: str | None = None,
    shard: str | None = None,
    cell: str | None = None,
    type: TabletType | None = None,
) -> dict[str, Any]:
    recs = await service.store.list_tablets(keyspace=keyspace, shard=shard, cell=cell, type=type)
    return {"tablets": [record(t) for t in recs]}


async def tablet(service: Service, alias: str) -> dict[str, Any]:
    rec = await service.store.get_tablet(alias)
    return {**record(rec), "cell": rec.cell, "health": health_snapshot(service).get(rec.alias),
            "maintenance": maintenance_doc(rec)}  # fmt: skip


async def srv_keyspace(service: Service, cell: str, ks: str) -> dict[str, Any]:
    return record(await service.store.get_srv_keyspace(cell, ks))


def lock_doc(info: LockInfo) -> dict[str, Any]:
    d = info.to_dict()
    d.pop("version", None)
    d["age_s"] = round(max(0.0, time.time() - info.started_at), 3) if info.started_at else None
    d["holder"] = info.describe()
    return d


async def locks(service: Service) -> dict[str, Any]:
    infos = await service.store.list_locks()
    return {"locks": [lock_doc(i) for i in sorted(infos, key=lambda i: (i.keyspace, i.shard))]}


def workflow_summary(rec: WorkflowRecord) -> dict[str, Any]:
    d = record(rec)
    d["steps"] = len(rec.steps)
    d.pop("result", None)
    return d


async def workflows(
    service: Service,
    *,
    keyspace: str | None = None,
    shard: str | None = None,
    status: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """Newest first (by creation time: ids sort by time only within one action)."""
    recs = await service.store.list_workflows()
    picked = [
        r
        for r in sorted(recs, key=lambda r: r.created_at, reverse=True)
        if (keyspace is None or r.keyspace == keyspace)
        and (shard is None or r.shard == shard)
        and (status is None or r.status.value == status)
        and (action is None or r.action == action)
    ]
    return {"workflows": [workflow_summary(r) for r in picked[:limit]]}


async def workflow(service: Service, wf_id: str) -> dict[str, Any]:
    return record(await service.store.get_workflow(wf_id))


async def journal(service: Service, ks: str, name: str, limit: int = 50) -> dict[str, Any]:
    """The reparent journal as the shard's current primary has it, newest first."""
    from mysqlctl.journal import read_journal

    store = service.store
    rec = await store.get_shard(ks, name)
    if rec.primary_alias is None:
        raise PreconditionError(f"shard {ks}/{name} has no primary: no journal to read")
    primary = await store.get_tablet(rec.primary_alias)
    entries = await read_journal(service.env.mysql(primary), limit)
    # Each row is linked to the workflow that wrote it: its record keeps the row's key.
    by_time = {
        int(r.result["journal_time_ns"]): r.id
        for r in await store.list_workflows()
        if (r.keyspace, r.shard) == (ks, name) and r.result.get("journal_time_ns")
    }
    return {
        "keyspace": ks,
        "shard": name,
        "primary": primary.alias,
        "entries": [{**vars(e), "workflow_id": by_time.get(e.time_created_ns)} for e in entries],
    }


async def replication_positions(service: Service, ks: str, name: str) -> dict[str, Any]:
    from workflows.replication import shard_replication_positions

    states = await shard_replication_positions(service.env, ks, name)
    return {"keyspace": ks, "shard": name, "tablets": [s.to_dict() for s in states]}


# How many recoveries /api/v1/health lists (GetRecoveries pages through more).
HEALTH_RECOVERIES = 200


async def recovery_history(service: Service, *, limit: int | None = None) -> dict[str, Any]:
    """{"recoveries": newest first, "recoveries_from": "etcd" | "memory"}: the shared recovery
    log in etcd; if etcd cannot be read, this instance's own entries, and says so."""
    try:
        entries = await service.health.recovery_history()
        source = "etcd"
    except TopoError as e:
        log.warning("recovery log unreadable; listing this instance's own", error=str(e))
        entries, source = list(service.health.recoveries()), "memory"
    return {"recoveries": entries[:limit], "recoveries_from": source}


def health_snapshot(service: Service) -> dict[str, dict[str, Any]]:
    return dict(service.health.snapshot())


# A peer's part of /api/v1/health must answer within this, or is reported as missing.
FLEET_TIMEOUT_S = 2.0


def _own_part(service: Service) -> dict[str, Any]:
    """What this instance checked: its share of the fleet (`local=true`)."""
    h = service.health
    problems = getattr(h, "problems", None)
    return {
        "instance_id": service.settings.instance_id,
        "owned_shards": list(getattr(h, "owned", [])),
        "checked_shards": sorted(getattr(h, "checking_since", {})),
        "last_cycle_at": getattr(h, "last_cycle_at", 0.0) or None,
        "tablets": health_snapshot(service),
        "problems": problems() if callable(problems) else {},
    }


async def _peer_parts(service: Service) -> dict[str, dict[str, Any]]:
    """Every other live instance's own part, asked in parallel over HTTP (the addresses are
    their membership records); one that does not answer is listed with the error."""
    import aiohttp

    from migration.members import MemberStore

    me = service.settings.instance_id
    members = await MemberStore(service.store.kv, service.store.root).list_masters()
    peers = [m for m in members if m.name != me]
    out: dict[str, dict[str, Any]] = {}
    if not peers:
        return out
    timeout = aiohttp.ClientTimeout(total=FLEET_TIMEOUT_S)

    async def ask(http: aiohttp.ClientSession, name: str, address: str) -> None:
        try:
            async with http.get(f"http://{address}/api/v1/health?local=true") as r:
                if r.status != 200:
                    raise ValueError(f"HTTP {r.status}")
                out[name] = {**await r.json(), "answered": True}
        except Exception as e:  # a peer's trouble is reported, not raised
            out[name] = {"instance_id": name, "answered": False, "address": address,
                         "error": f"{type(e).__name__}: {e}".rstrip(": ")}  # fmt: skip

    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(ask(http, m.name, m.address) for m in peers))
    return out


async def fleet_health(
    service: Service,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """(tablets, problems, fleet): every instance's latest checks merged (see `health`)."""
    own = _own_part(service)
    parts = {own["instance_id"]: {**own, "answered": True}}
    note = None
    if service.settings.health_share_shards:
        try:
            parts.update(await _peer_parts(service))
        except TopoError as e:
            note = f"live instances unreadable, this instance's share only: {e}"
    tablets: dict[str, dict[str, Any]] = {}
    problems: dict[str, Any] = {}
    # Owners last, so that their view wins over a handover's.
    for owner_pass in (False, True):
        for part in parts.values():
            owned = set(part.get("owned_shards") or ())
            for alias, t in (part.get("tablets") or {}).items():
                if (f"{t.get('keyspace')}/{t.get('shard')}" in owned) == owner_pass:
                    tablets[alias] = {**t, "checked_by": part["instance_id"]}
            for key, pr in (part.get("problems") or {}).items():
                if (key in owned) == owner_pass:
                    problems[key] = pr
    covered = {k for p in parts.values() for k in p.get("checked_shards") or ()}
    fleet = {
        "scope": "fleet" if service.settings.health_share_shards else "instance",
        "instances": {
            name: {k: v for k, v in p.items() if k not in ("tablets", "problems", "recoveries")}
            for name, p in sorted(parts.items())
        },
        "unchecked_shards": sorted(set(getattr(service.health, "shards", [])) - covered),
        "note": note,
    }
    return dict(sorted(tablets.items())), dict(sorted(problems.items())), fleet


async def health(service: Service, *, local: bool = False) -> dict[str, Any]:
    """The health of the whole fleet, whichever instance is asked.

    With the shards shared among instances each one checks only its own; this instance then
    asks every other live instance for its part (`local=true`: that instance's own checks only)
    and merges them, a tablet or shard taken from the instance that owns it (during a handover
    two may have checked it). `fleet` says who answered and which shards nobody checked. Asking
    the peers when a reader asks costs no etcd write at all (publishing snapshots to etcd
    would cost one write per instance per cycle, whether anyone reads them or not)."""
    election = service.election
    control = getattr(service.health, "control", None)
    own = _own_part(service)
    doc: dict[str, Any] = {
        "instance_id": service.settings.instance_id,
        "is_leader": election.is_leader,
        "leader_id": election.leader_id,
        "uptime_s": round(time.time() - service.started_at, 1),
        "tablets": own["tablets"],
    }
    if local:
        return {**doc, **own, "scope": "instance"}
    tablets, problems, fleet = await fleet_health(service)
    return {
        **doc,
        "tablets": tablets,
        **await recovery_history(service, limit=HEALTH_RECOVERIES),
        "problems": problems,
        # Pauses in force as of the last health cycle (SetRecoveries, keyspace auto_recovery).
        "recovery_control": {
            "recoveries_enabled_setting": service.settings.recoveries_enabled,
            **(control.to_dict(service.health.keyspaces) if control is not None else {}),
        },
        "fleet": fleet,
    }


# -- Patroni-style per-tablet checks (for load balancers) --------------------------------------


def _fresh(service: Service, snap: dict[str, Any] | None) -> dict[str, Any] | None:
    """A health snapshot recent enough to answer from, else None (then we probe directly)."""
    if not snap:
        return None
    checked = snap.get("checked_at")
    if isinstance(checked, str):  # ISO 8601
        try:
            checked = datetime.datetime.fromisoformat(checked).timestamp()
        except ValueError:
            return None
    max_age = max(5.0, 5 * service.settings.health_interval_s)
    if not isinstance(checked, int | float) or time.time() - checked > max_age:
        return None
    return snap


async def _probe(service: Service, alias: str) -> dict[str, Any]:
    """The tablet's state read from MySQL now, in the snapshot's shape."""
    rec = await service.store.get_tablet(alias)
    try:
        status = await service.env.mysql(rec).status(timeout=service.settings.health_timeout_s)
    except (MysqlError, TimeoutError) as e:
        return {"healthy": False, "error": str(e) or type(e).__name__}
    r = status.replication
    return {
        "healthy": True,
        "error": None,
        "read_only": status.read_only,
        "replicating_from": f"{r.source_host}:{r.source_port}" if r else None,
        "io_running": r.io_running if r else None,
        "sql_running": r.sql_running if r else None,
        "lag_seconds": r.lag_seconds if r else None,
        "checked_at": time.time(),
    }


async def tablet_state(service: Service, alias: str) -> tuple[dict[str, Any], str]:
    """The latest fresh health snapshot of a tablet, or a direct probe; and which it was."""
    snap = _fresh(service, health_snapshot(service).get(alias))
    if snap is not None:
        return snap, "health_check"
    return await _probe(service, alias), "probe"


async def primary_check(service: Service, alias: str) -> tuple[bool, dict[str, Any]]:
    """200-worthy only if the tablet is its shard's serving primary in topology and writable."""
    store = service.store
    rec = await store.get_tablet(alias)
    shard_rec = await store.get_shard(rec.keyspace, rec.shard)
    topo_primary = (
        shard_rec.primary_alias == rec.alias
        and shard_rec.is_primary_serving
        and rec.type == TabletType.PRIMARY
    )
    state, source = await tablet_state(service, rec.alias)
    writable = bool(state.get("healthy")) and state.get("read_only") is False
    reasons = []
    if not topo_primary:
        reasons.append(f"not the serving primary of {shard_rec.key} in topology "
                       f"(primary is {shard_rec.primary_alias})")  # fmt: skip
    if not state.get("healthy"):
        reasons.append(f"unhealthy: {state.get('error')}")
    elif not writable:
        reasons.append("read-only")
    ok = topo_primary and writable
    return ok, {
        "alias": rec.alias, "role": "primary", "ok": ok, "type": rec.type.value,
        "topology_primary": topo_primary, "writable": writable, "source": source,
        "reason": "; ".join(reasons) or None, "state": state,
    }  # fmt: skip


async def replica_check(
    service: Service, alias: str, max_lag: float | None
) -> tuple[bool, dict[str, Any]]:
    """200-worthy only if the tablet replicates (both threads) with lag <= max_lag."""
    rec = await service.store.get_tablet(alias)
    state, source = await tablet_state(service, rec.alias)
    lag = state.get("lag_seconds")
    reasons = []
    if not state.get("healthy"):
        reasons.append(f"unhealthy: {state.get('error')}")
    elif not state.get("replicating_from"):
        reasons.append("not replicating")
    elif state.get("io_running") is False or state.get("sql_running") is False:
        reasons.append("replication threads not running")
    elif lag is None:
        reasons.append("replication lag unknown")
    elif max_lag is not None and lag > max_lag:
        reasons.append(f"lag {lag}s > {max_lag}s")
    if rec.type == TabletType.PRIMARY:
        reasons.append("typed primary in topology")
    ok = not reasons
    return ok, {
        "alias": rec.alias, "role": "replica", "ok": ok, "type": rec.type.value,
        "lag_seconds": lag, "max_lag": max_lag, "source": source,
        "reason": "; ".join(reasons) or None, "state": state,
    }  # fmt: skip


async def recoveries(
    service: Service,
    *,
    keyspace: str | None = None,
    shard: str | None = None,
    result: str | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """The recovery history (every instance's, from the recovery log in etcd) and, per shard,
    what the leader would do now: paused or not, the last failover and the anti-flapping window
    left."""
    from orchestrator.health.control import load

    store = service.store
    health = service.health
    keyspaces, shard_recs, _ = await store.list_shards_and_locks()
    by_name = {k.name: k for k in keyspaces}
    if keyspace is not None and keyspace not in by_name:
        await store.get_keyspace(keyspace)  # NotFound, named
    if keyspace is not None and shard is not None:
        await store.get_shard(keyspace, shard)
    control = await load(store)
    history = await recovery_history(service)
    entries = [
        e for e in history["recoveries"]
        if (keyspace is None or e["keyspace"] == keyspace)
        and (shard is None or e["shard"] == shard)
        and (result is None or e["result"] == result)
    ][:limit]  # fmt: skip
    block_s = service.settings.recovery_block_s
    shards: dict[str, Any] = {}
    problems = health.problems()
    for s in sorted(shard_recs, key=lambda s: (s.keyspace, s.name)):
        if (keyspace is not None and s.keyspace != keyspace) or (
            shard is not None and s.name != shard
        ):
            continue
        last = await health.recovery.last_failover(s.keyspace, s.name)
        left = None
        if last is not None:
            left = round(max(0.0, block_s - (time.time() - float(last.get("time", 0)))), 1)
        paused = None
        if not service.settings.recoveries_enabled:
            paused = "recoveries are disabled (recoveries_enabled=false)"
        elif (p := control.paused(s.keyspace, s.name, by_name.get(s.keyspace))) is not None:
            paused = p[1]
        shards[s.key] = {
            "paused": paused,
            "problems": [p["kind"] + (f" {p['tablet']}" if p["tablet"] else "")
                         for p in problems.get(s.key, [])],
            "last_failover": last,
            "failover_block_left_s": left,
        }  # fmt: skip
    election = service.election
    return {
        "instance_id": service.settings.instance_id,
        "is_leader": election.is_leader,
        "leader_id": election.leader_id,
        "note": None if history["recoveries_from"] == "etcd" else (
            "the recovery log in etcd could not be read: this instance lists only the "
            "recoveries it ran itself"
        ),
        "recoveries": entries,
        "recoveries_from": history["recoveries_from"],
        "shards": shards,
    }  # fmt: skip
