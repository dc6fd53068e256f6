"""The OpenAPI 3.1 document, generated from the route table (and through it the command
registry), so it lists exactly the routes the server has. Record schemas are derived from the
topology dataclasses."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Iterable
from typing import Any

from orchestrator.api.routing import JSON, Route
from topo import records

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "INVALID_ARGUMENT, NOT_FOUND, ..."},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
            "required": ["code", "message", "details"],
        }
    },
    "required": ["error"],
}

_STATUS_TEXT = {
    200: "OK",
    400: "invalid input (bad JSON, unknown field or command, malformed name)",
    401: "missing or wrong bearer token",
    404: "not found",
    409: "conflict",
    500: "internal error (a bug; logged)",
    502: "a MySQL server failed",
    503: "unavailable",
}


def _type_schema(tp: Any) -> dict[str, Any]:
    """JSON schema of a dataclass field's type (the subset our records use)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(options) < len(typing.get_args(tp))
        inner = _type_schema(options[0]) if len(options) == 1 else {}
        if not nullable:
            return inner
        if "$ref" in inner:
            return {"oneOf": [inner, {"type": "null"}]}
        if "enum" in inner:
            return {**inner, "type": [inner["type"], "null"], "enum": [*inner["enum"], None]}
        if "type" in inner:
            return {**inner, "type": [inner["type"], "null"]}
        return {}
    if origin in (tuple, list):
        items = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return {"type": "array", "items": _type_schema(items[0]) if items else {}}
    if origin is dict:
        kv = typing.get_args(tp)
        value = _type_schema(kv[1]) if len(kv) == 2 and kv[1] is not Any else {}
        return {"type": "object", "additionalProperties": value} if value else {"type": "object"}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if isinstance(tp, type) and issubclass(tp, records.Record):
        return {"$ref": f"#/components/schemas/{tp.__name__}"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    return {}


def record_schema(cls: type[records.Record], *, nested: bool = False) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        if f.name == "revision":
            continue
        props[f.name] = _type_schema(hints[f.name])
        required.append(f.name)
    if not nested:
        props["version"] = {"type": "integer", "description": "record schema version"}
        props["revision"] = {"type": "integer", "description": "etcd mod_revision when read"}
    doc = (cls.__doc__ or "").strip().splitlines()
    return {
        "type": "object",
        "description": doc[0] if doc else cls.__name__,
        "properties": props,
        "required": required,
    }


def components() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    top: tuple[type[records.Record], ...] = (
        records.Keyspace, records.Shard, records.Tablet, records.SrvKeyspace, records.LockInfo,
        records.WorkflowRecord,
    )  # fmt: skip
    nested: tuple[type[records.Record], ...] = (
        records.ServingEndpoint, records.ShardServing, records.WorkflowStep,
    )  # fmt: skip
    for cls in top:
        schemas[cls.__name__] = record_schema(cls)
    for cls in nested:
        schemas[cls.__name__] = record_schema(cls, nested=True)
    schemas["KeyspaceList"] = {
        "type": "object",
        "properties": {"keyspaces": {"type": "array",
                                     "items": {"$ref": "#/components/schemas/Keyspace"}}},
        "required": ["keyspaces"],
    }  # fmt: skip
    schemas["TabletList"] = {
        "type": "object",
        "properties": {"tablets": {"type": "array",
                                   "items": {"$ref": "#/components/schemas/Tablet"}}},
        "required": ["tablets"],
    }  # fmt: skip
    shard_view = record_schema(records.Shard)
    shard_view["properties"] = {
        **shard_view["properties"],
        "tablets": {"type": "array", "items": {"type": "object"}},
        "unreadable_cells": {"type": "array", "items": {"type": "string"}},
        "lock": {"oneOf": [{"type": "object"}, {"type": "null"}]},
    }
    schemas["ShardView"] = shard_view
    return schemas


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def operation(route: Route) -> dict[str, Any]:
    ok_schema = dict(route.response_schema) if route.response_schema else {"type": "object"}
    content: dict[str, Any] = {}
    for ct in route.content_types:
        content[ct] = {"schema": ok_schema if ct == JSON else {"type": "string"}}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": content}}
    extra = dict(route.responses)
    statuses = {400, 500, 503, *extra}
    if route.auth:
        statuses.add(401)
    for status in sorted(statuses):
        text = extra.get(status, _STATUS_TEXT.get(status, "error"))
        if route.path.endswith(("/primary", "/replica")) and status == 503:
            responses["503"] = {"description": text, "content": {JSON: {"schema": ok_schema}}}
        else:
            responses[str(status)] = _error_response(text)
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": responses,
    }
    if route.description:
        op["description"] = route.description
    if route.params:
        op["parameters"] = [
            {"name": p.name, "in": p.where, "required": p.where == "path",
             "description": p.help, "schema": p.schema()}
            for p in route.params
        ]  # fmt: skip
    if route.body_schema is not None:
        body_required = bool(route.body_schema.get("required"))
        op["requestBody"] = {
            # A command without required arguments takes an empty body as {}.
            "required": body_required,
            "content": {JSON: {"schema": dict(route.body_schema)}},
        }
    if route.auth:
        op["security"] = [{"bearer": []}]
    if route.endless:
        op["x-endless-stream"] = True
    return op


def build_document(routes: Iterable[Route], *, version: str = "0.1.0") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = operation(route)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shard orchestrator API",
            "version": version,
            "description": "Topology reads, vtctl-style commands (POST /api/v1/commands/<Name>), "
            "serving-graph watches and health checks. Commands need `Authorization: Bearer "
            "<token>` when the service has an api_token. Errors: "
            '`{"error": {"code", "message", "details"}}`.',
        },
        "paths": paths,
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
