"""Ports for tests that need an address where nothing answers, without the race of choosing a
free port now and hoping that nobody binds it before it is used.

A TCP socket that is bound but does not listen holds its port: connecting to it is refused, as
for a server that is down, and no other process can take the port meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator


def reserve_port(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A socket bound to `port` (0: a free one) that does not listen; close it to let go."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def refused_port(host: str = "127.0.0.1") -> Iterator[int]:
    """`with refused_port() as port:` a port on which every connection is refused."""
    sock = reserve_port(0, host)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()
