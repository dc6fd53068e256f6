"""`POST /api/v1/commands/<Name>`: vtctl-style commands from the registry in
`orchestrator.commands`, one route per command (plus a catch-all that names the known ones).

Order of checks: bearer token (when one is configured, and the command changes something:
read commands are as open as the GET routes), then the JSON body against the command's
arguments, then the command runs. `X-Orchestrator-Deadline: <epoch seconds>` says when the
client gives up: a workflow does not start acting after it. With `?stream=1` (or `Accept: application/x-ndjson`)
the answer is NDJSON: `{"progress": {...}}` per workflow event, then one last line, either
`{"result": ...}` or `{"error": {...}, "status": <the status it would have had>}`. Otherwise
the answer is the result JSON, or an error with its status.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from orchestrator import commands as registry
from orchestrator import metrics
from orchestrator.api.routing import JSON, NDJSON, Param, Route, path
from orchestrator.api.streams import spawn_command
from orchestrator.errors import UnauthorizedError, classify, error_body, error_response
from topo.errors import TopoUnavailableError
from workflows import errors as we

if TYPE_CHECKING:
    from orchestrator.service import Service

log = structlog.get_logger(__name__)

STREAM = Param("stream", "bool", "stream progress as NDJSON lines (also: Accept: "
               "application/x-ndjson)")  # fmt: skip


# A command cancelled by the service's shutdown (its workflow released the lock).
_CANCELLED = TopoUnavailableError("the command was cancelled: the service is shutting down")


DEADLINE_HEADER = "X-Orchestrator-Deadline"


def request_deadline(request: web.Request) -> float | None:
    """When the client gives up (epoch seconds, from `X-Orchestrator-Deadline`): a workflow
    does not start acting after it. A malformed value is a 400."""
    raw = request.headers.get(DEADLINE_HEADER)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise registry.ArgumentError(
            f"{DEADLINE_HEADER}: want epoch seconds, got {raw[:40]!r}", field=DEADLINE_HEADER
        ) from None
    if not value > 0:
        raise registry.ArgumentError(f"{DEADLINE_HEADER}: must be > 0", field=DEADLINE_HEADER)
    return value


def check_token(request: web.Request, service: Service) -> None:
    token = service.settings.api_token
    if not token:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise UnauthorizedError("this command needs Authorization: Bearer <token>")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise UnauthorizedError("wrong bearer token")


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise registry.ArgumentError(f"the body is not valid JSON: {e}") from None


def wants_stream(request: web.Request, p: dict[str, Any]) -> bool:
    if p.get("stream") is not None:
        return bool(p["stream"])
    return NDJSON in request.headers.get("Accept", "")


async def _details(service: Service, ctx: registry.CommandContext, exc: BaseException) -> Any:
    """Extra error details: the workflow id, and for a partial failure its recorded result."""
    if ctx.workflow_id is None:
        return None
    details: dict[str, Any] = {"workflow_id": ctx.workflow_id}
    if isinstance(exc, we.PartialFailureError):
        with contextlib.suppress(Exception):
            rec = await service.store.get_workflow(ctx.workflow_id)
            details["result"] = rec.result
    return details


def run_command(cmd: registry.Command) -> Any:
    async def handler(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
        if not cmd.read:  # reads need no token, as the GET routes they mirror
            check_token(request, service)
        args = registry.parse_args(cmd, await read_json(request))
        stream = wants_stream(request, p)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        ctx = registry.CommandContext(
            service,
            progress=queue.put_nowait if stream else None,
            peer=request.remote or "",
            deadline=request_deadline(request),
        )
        log.info("command", command=cmd.name, args=_loggable(args), peer=ctx.peer)
        task = spawn_command(request.app, cmd.handler(ctx, args), name=f"command {cmd.name}")
        if not stream:
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not task.cancelled() or (current is not None and current.cancelling()):
                    raise
                return error_response(_CANCELLED)
            except Exception as e:
                _count(cmd, e)
                return error_response(e, await _details(service, ctx, e))
            _count(cmd, None)
            return result
        return await _stream(request, service, cmd, ctx, task, queue)

    return handler


async def _stream(
    request: web.Request,
    service: Service,
    cmd: registry.Command,
    ctx: registry.CommandContext,
    task: asyncio.Task[Any],
    queue: asyncio.Queue[dict[str, Any]],
) -> web.StreamResponse:
    # Hold the headers back until the first progress event: a command that fails before it
    # reports any progress (bad arguments found by the workflow, an unknown keyspace) gets its
    # real status and a plain JSON error, like a request without streaming.
    first: list[dict[str, Any]] = []
    getter = asyncio.ensure_future(queue.get())
    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
    if getter.done():
        first.append(getter.result())
    else:
        getter.cancel()
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            assert exc is not None
            _count(cmd, exc)
            return error_response(exc, await _details(service, ctx, exc))
    resp = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    await resp.prepare(request)
    connected = True

    async def send(obj: Any) -> None:
        nonlocal connected
        if not connected:
            return
        try:
            await resp.write(json.dumps(obj, default=str).encode() + b"\n")
        except (ConnectionError, RuntimeError):
            connected = False  # the client left; the command goes on

    for event in first:
        await send({"progress": event})
    while True:
        getter = asyncio.ensure_future(queue.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            await send({"progress": getter.result()})
            continue
        getter.cancel()
        break
    while not queue.empty():
        await send({"progress": queue.get_nowait()})
    if task.cancelled():
        status, body = error_body(_CANCELLED)
        await send({**body, "status": status})
    elif task.exception() is not None:
        exc = task.exception()
        assert exc is not None
        _count(cmd, exc)
        status, body = error_body(exc, await _details(service, ctx, exc))
        await send({**body, "status": status})
    else:
        _count(cmd, None)
        await send({"result": task.result()})
    if connected:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write_eof()
    return resp


def _count(cmd: registry.Command, exc: BaseException | None) -> None:
    result = "succeeded" if exc is None else classify(exc)[1]
    metrics.COMMANDS.labels(cmd.name, result).inc()


def _loggable(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}


async def unknown_command(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    check_token(request, service)
    registry.get_command(p["name"])  # raises UnknownCommandError naming the known ones
    raise web.HTTPNotFound()  # unreachable: known commands have routes of their own


async def list_commands(request: web.Request, service: Service, p: dict[str, Any]) -> Any:
    return {"commands": [describe(c) for c in registry.COMMANDS.values()]}


def describe(cmd: registry.Command) -> dict[str, Any]:
    return {
        "name": cmd.name,
        "summary": cmd.summary,
        "description": cmd.description,
        "workflow": cmd.workflow,
        "args": cmd.body_schema(),
        "examples": list(cmd.examples),
    }


_COMMAND_RESPONSES = {
    400: "invalid arguments",
    401: "missing or wrong bearer token",
    404: "a named keyspace, shard or tablet does not exist",
    409: "lock held, precondition failed, aborted, or already exists",
    502: "a tablet's MySQL failed, or a reparent only partly completed",
    503: "etcd unavailable",
}


def command_routes() -> list[Route]:
    routes = [
        Route(
            "POST",
            f"/api/v1/commands/{cmd.name}",
            run_command(cmd),
            cmd.summary,
            "commands",
            f"command{cmd.name}",
            (STREAM,),
            responses=_COMMAND_RESPONSES,
            content_types=(JSON, NDJSON),
            auth=not cmd.read,
            body_schema=cmd.body_schema(),
            description=(cmd.description + "\n\n" if cmd.description else "")
            + "CLI: "
            + "; ".join(f"`orchestrator ctl {e}`" for e in cmd.examples),
        )
        for cmd in registry.COMMANDS.values()
    ]
    routes.append(
        Route(
            "POST",
            "/api/v1/commands/{name}",
            unknown_command,
            "Any other name: 400 with the list of commands.",
            "commands",
            "commandUnknown",
            (path("name", "string", "command name"),),
            responses={400: "unknown command", 401: "missing or wrong bearer token"},
            auth=True,
        )
    )
    routes.append(
        Route(
            "GET",
            "/api/v1/commands",
            list_commands,
            "The commands, their arguments (JSON schema) and CLI examples.",
            "commands",
            "listCommands",
        )
    )
    return routes
