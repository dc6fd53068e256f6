"""The HTTP API: topology reads, vtctl-style commands, watches, health and metrics endpoints,
the inbound webhook, and an OpenAPI document generated from the same route table.

Layout: `routing` (the Route/Param vocabulary), `routes_topology`, `routes_status`,
`routes_commands` (one route per command of `orchestrator.commands`), `app` (middleware, the
operational endpoints, `serve_http`), `openapi`, `streams` (background tasks). It reads records
through `orchestrator.views` (shared with the Get* commands) and maps errors to statuses with
`orchestrator.errors` (shared with the webhook). Nothing but the service imports this package.
"""

from orchestrator.api.app import build_app, serve_http

__all__ = ["build_app", "serve_http"]
