"""The web console: a page served at `/` by the service's own aiohttp app, fed live by
Server-Sent Events (`stream`) built from the API's views (`state`). Its actions are the API's
commands (`POST /api/v1/commands/<Name>`), with the bearer token the user pastes into the page.

Every asset is a file of this package (`static/`): no CDN, no build step. The page's policy
(`Content-Security-Policy`) allows nothing but this origin.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from orchestrator.console.stream import STREAM_TASKS, cancel_streams, stream

if TYPE_CHECKING:
    from orchestrator.service import Service

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")  # fmt: skip


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={
        "Content-Security-Policy": CSP, "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
    })  # fmt: skip


def is_console_path(path: str) -> bool:
    """The console's own paths: a page and its assets, not API operations (the OpenAPI document
    leaves them out)."""
    return path == "/" or path.startswith("/console/")


def setup(app: web.Application, service: Service) -> None:
    """Mount the console on the app: `/`, `/console/static/...`, `/console/stream`. (The API
    mounts it; the console imports nothing of the API.)"""
    app[STREAM_TASKS] = set()
    app.on_shutdown.append(cancel_streams)
    app.router.add_get("/", index)
    app.router.add_get("/console/stream", functools.partial(stream, service))
    app.router.add_static("/console/static", STATIC, append_version=False)
