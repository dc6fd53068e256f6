"""Reads of the topology: keyspaces, shards, tablets, the serving graph (and its watch), locks,
and the Patroni-style per-tablet checks for load balancers."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from orchestrator import views
from orchestrator.api.routing import ALIAS, CELL, KS, NDJSON, SHARD, Param, Route
from orchestrator.api.streams import track_stream
from topo.records import TabletType

if TYPE_CHECKING:
    from orchestrator.service import Service


async def list_keyspaces(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.keyspaces(service)


async def get_keyspace(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.keyspace(service, p["keyspace"])


async def list_shards(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.shards(service, p["keyspace"])


async def get_shard(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.shard(service, p["keyspace"], p["shard"])


async def list_tablets(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    t = p["type"]
    return await views.tablets(
        service, keyspace=p["keyspace"], shard=p["shard"], cell=p["cell"],
        type=TabletType(t) if t else None,
    )  # fmt: skip


async def get_tablet(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.tablet(service, p["alias"])


async def tablet_primary(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    ok, body = await views.primary_check(service, p["alias"])
    return web.json_response(body, status=200 if ok else 503)


async def tablet_replica(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    ok, body = await views.replica_check(service, p["alias"], p["max_lag"])
    return web.json_response(body, status=200 if ok else 503)


async def get_serving(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return await views.srv_keyspace(service, p["cell"], p["keyspace"])


async def watch_serving(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    """One NDJSON line per version of the serving graph (`null` while it does not exist),
    starting with the current one, until the client goes away. Pushed by an etcd watch."""
    cell, ks = p["cell"], p["keyspace"]
    await service.store.get_keyspace(ks)  # a typo is a 404, not an endless wait
    resp = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    await resp.prepare(request)

    async def pump() -> None:
        async for graph in service.store.watch_srv_keyspace(cell, ks):
            line = views.record(graph) if graph is not None else None
            await resp.write(json.dumps(line).encode() + b"\n")

    task = asyncio.create_task(pump(), name=f"watch {cell}/{ks}")
    with track_stream(request.app, task):
        # The handler is not cancelled when the client leaves: check the transport, so a
        # watch never outlives its reader.
        while not task.done():
            await asyncio.wait({task}, timeout=0.5)
            transport = request.transport
            if transport is None or transport.is_closing():
                task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            exc = task.exception() if not task.cancelled() else None
            if exc is not None:
                from orchestrator.errors import error_body

                _, body = error_body(exc)
                await resp.write(json.dumps(body).encode() + b"\n")
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp


_CHECK_SCHEMA = {
    "type": "object",
    "properties": {
        "alias": {"type": "string"},
        "role": {"type": "string"},
        "ok": {"type": "boolean"},
        "source": {"type": "string", "enum": ["health_check", "probe"]},
        "reason": {"type": ["string", "null"]},
        "state": {"type": "object"},
    },
    "required": ["alias", "ok", "reason"],
}

ROUTES = [
    Route("GET", "/api/v1/keyspaces", list_keyspaces, "List keyspaces.", "topology",
          "listKeyspaces", response_schema={"$ref": "#/components/schemas/KeyspaceList"}),
    Route("GET", "/api/v1/keyspaces/{keyspace}", get_keyspace,
          "A keyspace and the names of its shards.", "topology", "getKeyspace", (KS,),
          responses={404: "no such keyspace"}),
    Route("GET", "/api/v1/keyspaces/{keyspace}/shards", list_shards,
          "The shards of a keyspace.", "topology", "listShards", (KS,),
          responses={404: "no such keyspace"}),
    Route("GET", "/api/v1/keyspaces/{keyspace}/shards/{shard}", get_shard,
          "A shard: primary, serving state, tablets and lock.", "topology", "getShard",
          (KS, SHARD), responses={404: "no such shard"},
          response_schema={"$ref": "#/components/schemas/ShardView"}),
    Route("GET", "/api/v1/tablets", list_tablets, "List tablets, optionally filtered.",
          "topology", "listTablets",
          (Param("keyspace", "keyspace", "only this keyspace"),
           Param("shard", "shard", "only this shard"),
           Param("cell", "cell", "only this cell"),
           Param("type", "tablet_type", "only this tablet type")),
          response_schema={"$ref": "#/components/schemas/TabletList"}),
    Route("GET", "/api/v1/tablets/{alias}", get_tablet,
          "A tablet with its latest health check.", "topology", "getTablet", (ALIAS,),
          responses={404: "no such tablet"}),
    Route("GET", "/api/v1/tablets/{alias}/primary", tablet_primary,
          "200 only if the tablet is its shard's serving primary and writable (for load "
          "balancers).", "checks", "checkPrimary", (ALIAS,),
          responses={503: "not the writable serving primary (body says why)",
                     404: "no such tablet"},
          response_schema=_CHECK_SCHEMA,
          description="Answers from the latest health check when it is fresh, else probes the "
          "tablet's MySQL directly."),
    Route("GET", "/api/v1/tablets/{alias}/replica", tablet_replica,
          "200 only if the tablet replicates with lag <= max_lag (for load balancers).",
          "checks", "checkReplica",
          (ALIAS, Param("max_lag", "number", "largest acceptable lag in seconds")),
          responses={503: "not a replicating replica within max_lag (body says why)",
                     404: "no such tablet"},
          response_schema=_CHECK_SCHEMA),
    Route("GET", "/api/v1/serving/{cell}/{keyspace}", get_serving,
          "The serving graph of a keyspace in a cell (what clients route by).", "serving",
          "getServingGraph", (CELL, KS), responses={404: "no serving graph"}),
    Route("GET", "/api/v1/serving/{cell}/{keyspace}/watch", watch_serving,
          "Follow the serving graph: one NDJSON line per version, pushed as it changes.",
          "serving", "watchServingGraph", (CELL, KS), content_types=(NDJSON,),
          responses={404: "no such keyspace"}, endless=True,
          description="The first line is the current graph (or null while there is none); "
          "each later line is a new version (a new primary, a replica added). The stream "
          "stays open until the client closes it."),
    Route("GET", "/api/v1/locks", lambda r, s, p: views.locks(s),
          "Every shard lock held now: action, holder, age.", "locks", "listLocks"),
]  # fmt: skip
