"""The CLI's HTTP/1.1 client (`orchestrator.ctl_http`) against real servers on loopback: an
aiohttp server streaming NDJSON (chunked, lines split across chunks), a Content-Length body, a
body ended by the connection's close, an interim 100 response, and the ways a reply can be
wrong (not HTTP, cut short in a chunk)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from orchestrator.ctl_http import ProtocolError, Response, post


async def _post(port: int, body: bytes = b"{}", *, path: str = "/x?stream=1") -> Response:
    return await asyncio.to_thread(
        post, "127.0.0.1", port, path, body, {"Content-Type": "application/json"},
        host_header=f"127.0.0.1:{port}", timeout=5,
    )  # fmt: skip


@pytest.fixture
async def aiohttp_port() -> AsyncIterator[int]:
    seen: list[dict[str, object]] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        seen.append({"body": await request.json(), "query": request.query_string,
                     "host": request.host, "length": request.content_length})  # fmt: skip
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        await resp.write(b'{"progress": {"event": "started"}}\n{"progr')
        await asyncio.sleep(0.05)
        await resp.write(b'ess": {"event": "step"}}\n')
        await resp.write(json.dumps({"result": seen[-1]}).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "UNAUTHENTICATED", "message": "no"}},
                                 status=401)  # fmt: skip

    app = web.Application()
    app.router.add_post("/x", stream)
    app.router.add_post("/refuse", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_a_chunked_ndjson_stream_is_read_line_by_line(aiohttp_port: int) -> None:
    resp = await _post(aiohttp_port, json.dumps({"a": 1}).encode())
    with resp:
        assert resp.status == 200 and resp.headers["transfer-encoding"] == "chunked"
        lines = await asyncio.to_thread(list, resp)
    assert [json.loads(x) for x in lines[:2]] == [
        {"progress": {"event": "started"}}, {"progress": {"event": "step"}},
    ]  # fmt: skip
    result = json.loads(lines[2])["result"]
    assert result == {"body": {"a": 1}, "query": "stream=1", "host": f"127.0.0.1:{aiohttp_port}",
                      "length": 8}  # fmt: skip
    assert len(lines) == 3


async def test_an_error_status_with_a_content_length_body(aiohttp_port: int) -> None:
    with await _post(aiohttp_port, path="/refuse?stream=1") as resp:
        assert (resp.status, resp.reason) == (401, "Unauthorized")
        assert json.loads(resp.read())["error"]["code"] == "UNAUTHENTICATED"


async def raw_server(
    reply: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, int]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        await reply(r, w)
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("wire", "lines"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\na\nb\nlast", [b"a\n", b"b\n", b"last"]),  # ends with the close
        (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok\n\nextra",
         [b"ok\n", b"\n"]),  # interim response skipped; the body stops at its length
        (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nab\n\r\n0\r\nT: 1\r\n\r\n",
         [b"ab\n"]),  # chunk extensions and trailers
    ],
)  # fmt: skip
async def test_bodies_framed_each_way(wire: bytes, lines: list[bytes]) -> None:
    async def reply(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(wire)

    server, port = await raw_server(reply)
    async with server:
        with await _post(port) as resp:
            assert resp.status == 200
            assert await asyncio.to_thread(list, resp) == lines


async def test_a_reply_that_is_not_http_or_is_cut_short_is_an_error() -> None:
    async def ssh(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"SSH-2.0-OpenSSH_9.2\r\n")

    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc")

    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        pass

    server, port = await raw_server(ssh)
    async with server:
        with pytest.raises(ProtocolError, match=r"not an HTTP response: b'SSH-2\.0"):
            await _post(port)
    server, port = await raw_server(cut)
    async with server:
        with await _post(port) as resp, pytest.raises(ConnectionError, match="cut short"):
            await asyncio.to_thread(resp.read)
    server, port = await raw_server(silent)
    async with server:
        with pytest.raises(ConnectionError, match="without a response"):
            await _post(port)
