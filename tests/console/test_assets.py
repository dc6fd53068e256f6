"""The console's page and assets without a cluster: served from the package, with a policy
that lets the page load nothing from another origin, and no reference to one."""

from __future__ import annotations

import re
from typing import Any, cast

from aiohttp.test_utils import TestClient, TestServer

from orchestrator.api.app import build_app
from orchestrator.console import STATIC


async def test_page_and_assets_are_served_from_the_package_and_only_from_this_origin() -> None:
    app = build_app(cast(Any, object()))  # these routes do not touch the service
    async with TestClient(TestServer(app)) as client:
        r = await client.get("/")
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        assets = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page)
        assert sorted(assets) == ["/console/static/console.css", "/console/static/console.js"]
        for path in assets:
            r = await client.get(path)
            assert r.status == 200, path
        r = await client.get("/console/static/nope.js")
        assert r.status == 404
        # A page the stream does not know is refused, named, before any watch starts.
        r = await client.get("/console/stream", params={"page": "nope"})
        assert r.status == 400
        assert "fleet" in (await r.json())["error"]["message"]
        r = await client.get("/console/stream", params={"page": "shard", "keyspace": "a b"})
        assert r.status == 400
    for f in STATIC.iterdir():
        text = f.read_text()
        # The only URL in the assets is SVG's namespace name (an identifier, never fetched).
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert urls == set(), (f.name, urls)
