"""Reads of live state: workflows, the reparent journal, replication positions, health and
recoveries."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from orchestrator import views
from orchestrator.api.routing import KS, SHARD, Param, Route, path

if TYPE_CHECKING:
    from orchestrator.service import Service


async def list_workflows(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.workflows(
        service, keyspace=p["keyspace"], shard=p["shard"], status=p["status"],
        action=p["action"], limit=p["limit"] or 100,
    )  # fmt: skip


async def get_workflow(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.workflow(service, p["id"])


async def get_journal(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.journal(service, p["keyspace"], p["shard"], p["limit"] or 50)


async def get_positions(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.replication_positions(service, p["keyspace"], p["shard"])


async def get_health(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.health(service, local=bool(p["local"]))


async def get_audit(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    """Operator actions that bypass a safety (UnlockShard --force, unlock-ddl-lock)."""
    entries = await service.store.list_audit()
    if p["action"]:
        entries = [e for e in entries if e.get("action") == p["action"]]
    limit = p["limit"] or 100
    return {"entries": list(reversed(entries))[:limit]}


ROUTES = [
    Route("GET", "/api/v1/workflows", list_workflows,
          "Workflow runs, newest first (without their steps).", "workflows", "listWorkflows",
          (Param("keyspace", "keyspace", "only this keyspace"),
           Param("shard", "shard", "only this shard"),
           Param("status", "workflow_status", "only runs in this state"),
           Param("action", "workflow_action", "only this action (PlannedReparentShard, ...)"),
           Param("limit", "integer", "at most this many (default 100)"))),
    Route("GET", "/api/v1/workflows/{id}", get_workflow,
          "One workflow run with its steps, timings and result.", "workflows", "getWorkflow",
          (path("id", "workflow_id", "workflow id"),), responses={404: "no such workflow"},
          response_schema={"$ref": "#/components/schemas/WorkflowRecord"}),
    Route("GET", "/api/v1/keyspaces/{keyspace}/shards/{shard}/journal", get_journal,
          "The reparent journal (_vt.reparent_journal) as the shard's primary has it, newest "
          "first, each row with the id of the workflow that wrote it.", "replication", "getJournal",
          (KS, SHARD, Param("limit", "integer", "at most this many entries (default 50)")),
          responses={404: "no such shard", 409: "the shard has no primary",
                     502: "the primary's MySQL did not answer"}),
    Route("GET", "/api/v1/keyspaces/{keyspace}/shards/{shard}/replication-positions",
          get_positions,
          "Each tablet of the shard: type, position, source, threads, lag (probed now).",
          "replication", "getReplicationPositions", (KS, SHARD),
          responses={404: "no such shard"}),
    Route("GET", "/api/v1/audit", get_audit,
          "The audit log, newest first: who broke a shard lock or unlocked a DDL lock by hand, "
          "when, with which flags and what came of it.", "status", "getAudit",
          (Param("action", "workflow_action", "only this action (UnlockShard, unlock-ddl-lock)"),
           Param("limit", "integer", "at most this many (default 100)"))),
    Route("GET", "/api/v1/health", get_health,
          "Health-check snapshot of every tablet of the fleet (with the shards shared among "
          "instances, gathered from every live instance: `fleet` says who answered), recent "
          "recoveries (and blocked ones), and leadership.", "status", "getHealth",
          (Param("local", "bool", "only this instance's own checks (its share of the shards), "
                 "as the other instances ask for it"),)),
]  # fmt: skip
