"""A TCP proxy in the test's own event loop, to put a silent network cut between a client and a
real server: `freeze()` stops forwarding bytes in both directions but keeps every connection
open (as a partition does: no reset, no error, just silence), `thaw()` resumes. `retarget()`
moves it to another server the way a VIP moves: open connections are cut, new ones reach the
new server.

    proxy = await TcpProxy.start("127.0.0.1", etcd_port)
    store = TopoStore([proxy.endpoint], ...)
    proxy.freeze(); ...; proxy.thaw()
    await proxy.close()
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class TcpProxy:
    target_host: str
    target_port: int
    _server: asyncio.Server | None = None
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @classmethod
    async def start(cls, host: str, port: int) -> TcpProxy:
        proxy = cls(host, port)
        proxy._flowing.set()
        proxy._server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
        return proxy

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def freeze(self) -> None:
        """Silence: nothing is forwarded (nor refused) until `thaw()`."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    async def retarget(self, host: str, port: int) -> None:
        """From now on connect to host:port; every connection open now is closed."""
        self.target_host, self.target_port = host, port
        writers, self._writers = self._writers, []
        for w in writers:
            with contextlib.suppress(Exception):
                w.close()
        await asyncio.sleep(0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # a frozen link holds the bytes back
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    async def close(self) -> None:
        self._flowing.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for w in self._writers:
            with contextlib.suppress(Exception):
                w.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
