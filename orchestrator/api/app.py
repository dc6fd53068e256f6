"""The aiohttp application: the route table, the middleware (errors, metrics), and
`serve_http`, the service component that binds and serves it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from orchestrator import metrics
from orchestrator.api import openapi, streams
from orchestrator.api.routes_commands import command_routes
from orchestrator.api.routes_status import ROUTES as STATUS_ROUTES
from orchestrator.api.routes_topology import ROUTES as TOPOLOGY_ROUTES
from orchestrator.api.routing import SERVICE, Route
from orchestrator.errors import error_response

if TYPE_CHECKING:
    from orchestrator.service import Service

log = structlog.get_logger(__name__)

OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
READY_TIMEOUT_S = 2.0
WEBHOOK_PATH = "/api/v1/webhooks/external-reparent"


# -- operational endpoints -------------------------------------------------------------------


async def healthz(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return {"status": "ok", "instance_id": service.settings.instance_id}


async def readyz(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            revision = await service.store.kv.revision()
    except Exception as e:
        return web.json_response(
            {"error": {"code": "UNAVAILABLE", "message": f"etcd does not answer: {e!r}",
                       "details": {"etcd": list(service.settings.etcd_endpoints)}}},
            status=503,
        )  # fmt: skip
    return {"status": "ready", "etcd_revision": revision, "is_leader": service.is_leader}


async def prometheus(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    metrics.LEADER.set(1 if service.is_leader else 0)
    body, content_type = metrics.exposition()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def openapi_doc(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return request.app[OPENAPI]


async def external_reparent(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    """Mounted here, written in `orchestrator.webhooks` (HMAC-signed; no bearer token)."""
    from orchestrator.webhooks import handle_external_reparent

    return await handle_external_reparent(service, request)


OPS_ROUTES = [
    Route("GET", "/healthz", healthz, "The process is alive.", "operations", "healthz"),
    Route("GET", "/readyz", readyz, "200 when etcd answers, else 503.", "operations",
          "readyz", responses={503: "etcd does not answer"}),
    Route("GET", "/metrics", prometheus, "Prometheus metrics (text format).", "operations",
          "metrics", content_types=("text/plain",)),
    Route("GET", "/api/v1/openapi.json", openapi_doc, "This document.", "operations",
          "openapi"),
    Route("POST", WEBHOOK_PATH, external_reparent,
          "An external failover tool reports a new primary (runs TabletExternallyReparented).",
          "webhooks", "webhookExternalReparent",
          body_schema={"type": "object", "properties": {"tablet": {"type": "string"}},
                       "required": ["tablet"]},
          responses={401: "missing, stale or wrong HMAC signature (or webhooks disabled)",
                     404: "no such tablet", 409: "replayed signature, lock held or precondition"},
          description="Signed with HMAC-SHA256 over the timestamp and body (see "
          "orchestrator.signing); no bearer token."),
]  # fmt: skip


def all_routes() -> list[Route]:
    """Every route the server has, in registration order (concrete paths before templates)."""
    return [*OPS_ROUTES, *TOPOLOGY_ROUTES, *STATUS_ROUTES, *command_routes()]


# -- the application -------------------------------------------------------------------------


def _endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        params = route.parse_params(request)
        result = await route.handler(request, request.app[SERVICE], params)
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result)

    handle.__name__ = route.operation_id
    return handle


@web.middleware
async def middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Errors become JSON answers (mapped in `orchestrator.errors`); every request is
    counted and timed by route template."""
    started = time.monotonic()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            resp = e
        else:
            resp = error_response(e)
            if "Allow" in e.headers:  # a 405 says which methods the path has (RFC 9110)
                resp.headers["Allow"] = e.headers["Allow"]
    except Exception as e:
        resp = error_response(e)
    metrics.HTTP_REQUESTS.labels(route, request.method, str(resp.status)).inc()
    metrics.HTTP_DURATION.labels(route, request.method).observe(time.monotonic() - started)
    return resp


def build_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[middleware], client_max_size=1024 * 1024)
    app[SERVICE] = service
    streams.setup(app)
    routes = all_routes()
    for route in routes:
        app.router.add_route(route.method, route.path, _endpoint(route))
    app[OPENAPI] = openapi.build_document(routes)
    from orchestrator.console import setup as console_setup

    console_setup(app, service)  # the web console at `/` (not part of the API's OpenAPI document)
    return app


async def serve_http(service: Service) -> None:
    """Bind `listen_host:listen_port` (0: a free port), publish the port on the service, set
    `service.ready`, and serve until cancelled."""
    settings = service.settings
    service.store.kv.on_call = metrics.observe_etcd
    runner = web.AppRunner(build_app(service), access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.listen_host, settings.listen_port)
        await site.start()
        service.port = _bound_port(runner)
        log.info("HTTP API listening", host=settings.listen_host, port=service.port,
                 token_required=bool(settings.api_token))  # fmt: skip
        service.ready.set()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    raise RuntimeError(f"HTTP server bound no TCP address: {runner.addresses}")
