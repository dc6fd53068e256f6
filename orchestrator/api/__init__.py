"""The HTTP API: topology reads, vtctl-style commands, watches, health and metrics endpoints,
the inbound webhook, and an OpenAPI document generated from the same route table.

Layout: `routing` (the Route/Param vocabulary), `routes_topology`, `routes_status`,
`routes_commands` (one route per command of `orchestrator.commands`), `app` (middleware, the
operational endpoints, `serve_http`), `errors` (the one error-to-status mapping), `openapi`,
`views` (records as JSON, shared with the Get* commands), `streams` (background tasks).
"""

from orchestrator.api.app import build_app, serve_http

__all__ = ["build_app", "serve_http"]
