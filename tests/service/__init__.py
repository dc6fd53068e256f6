"""Tests of the service's HTTP API, CLI and OpenAPI document against a running service.

Small request helpers shared by the test modules live here."""

from __future__ import annotations

import json
from typing import Any

import aiohttp


async def get(http: aiohttp.ClientSession, url: str, path: str, **params: Any) -> tuple[int, Any]:
    async with http.get(url + path, params=params or None) as r:
        text = await r.text()
        return r.status, json.loads(text) if text and r.content_type.endswith("json") else text


async def command(
    http: aiohttp.ClientSession,
    url: str,
    name: str,
    body: Any = None,
    *,
    token: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = raw if raw is not None else json.dumps({} if body is None else body).encode()
    headers["Content-Type"] = "application/json"
    async with http.post(f"{url}/api/v1/commands/{name}", data=data, headers=headers) as r:
        return r.status, await r.json(content_type=None)


def error_code(body: Any) -> str:
    assert isinstance(body, dict) and "error" in body, body
    err = body["error"]
    assert set(err) == {"code", "message", "details"}, err
    return str(err["code"])
