"""The CLI's HTTP/1.1 client: one POST over plain HTTP, its response read as it streams.

`http.client` costs more to import than the rest of `orchestrator ctl` together (it imports the
`email` package, `ssl` and `datetime`), and `ctl` makes a single request, so plain `http://`
is spoken here on a socket. What it does, as `urllib.request.urlopen` does for this request:

- connect with the timeout, which also bounds every read (`TimeoutError`, an `OSError`);
- send `POST <path>?<query> HTTP/1.1` with `Host`, `Content-Length`, `Connection: close`;
- read the status line and headers (interim 1xx responses skipped), then the body framed by
  `Transfer-Encoding: chunked`, `Content-Length`, or the end of the connection;
- a reply that is not HTTP, or a body cut short, raises `ProtocolError` or `ConnectionError`.

`https://`, proxies and redirects are left to the caller (`orchestrator.ctl` hands them to
`urllib.request`).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

MAX_LINE = 65536
MAX_HEADERS = 100


class ProtocolError(Exception):
    """The server's reply is not HTTP/1.x."""


class Response:
    """Status, reason, headers (lower-case names) and the body, by line or whole."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._f = sock.makefile("rb")
        self.status, self.reason, self.headers = self._read_head()
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self._chunked = chunked
        self._left: int | None = None  # bytes left in the body (or chunk); None: to the end
        if self.status in (204, 304):
            self._left = 0
        elif not chunked and length is not None:
            try:
                self._left = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length!r}") from None
        self._chunk_left = 0
        self._done = self._left == 0

    # -- the head --------------------------------------------------------------------------

    def _line(self) -> bytes:
        line = self._f.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError("line too long")
        return line

    def _read_head(self) -> tuple[int, str, dict[str, str]]:
        while True:
            line = self._line()
            if not line:
                raise ConnectionError("the server closed the connection without a response")
            parts = line.decode("iso-8859-1").rstrip("\r\n").split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise ProtocolError(f"not an HTTP response: {line[:80]!r}")
            status, reason = int(parts[1]), parts[2] if len(parts) > 2 else ""
            headers: dict[str, str] = {}
            for _ in range(MAX_HEADERS + 1):
                h = self._line()
                if h in (b"\r\n", b"\n", b""):
                    break
                name, sep, value = h.decode("iso-8859-1").partition(":")
                if sep:
                    key = name.strip().lower()
                    value = value.strip()
                    headers[key] = f"{headers[key]}, {value}" if key in headers else value
            else:
                raise ProtocolError(f"more than {MAX_HEADERS} headers")
            if 100 <= status < 200 and status != 101:
                continue  # an interim response: the real one follows
            return status, reason, headers

    # -- the body --------------------------------------------------------------------------

    def _next_chunk(self) -> None:
        size_line = self._line()
        if not size_line:
            raise ConnectionError("the response was cut short (in a chunk size)")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_line[:40]!r}") from None
        if size == 0:
            while self._line() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self._done = True
        self._chunk_left = size

    def _chunk_end(self) -> None:
        if self._f.readline(3) not in (b"\r\n", b"\n"):
            raise ConnectionError("the response was cut short (after a chunk)")

    def readline(self) -> bytes:
        """The next line of the body (with its newline; the last may lack it), b"" at its end."""
        out = b""
        while not self._done and not out.endswith(b"\n"):
            if self._chunked:
                if self._chunk_left == 0:
                    self._next_chunk()
                    continue
                part = self._f.readline(min(self._chunk_left, MAX_LINE))
                if not part:
                    raise ConnectionError("the response was cut short (in a chunk)")
                self._chunk_left -= len(part)
                if self._chunk_left == 0:
                    self._chunk_end()
            else:
                limit = MAX_LINE if self._left is None else min(self._left, MAX_LINE)
                part = self._f.readline(limit)
                if not part:
                    if self._left:
                        raise ConnectionError("the response was cut short")
                    self._done = True
                    break
                if self._left is not None:
                    self._left -= len(part)
                    self._done = self._left == 0
            out += part
        return out

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def read(self) -> bytes:
        return b"".join(self)

    def close(self) -> None:
        self._f.close()
        self._sock.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def post(
    host: str, port: int, target: str, body: bytes, headers: dict[str, str], *,
    host_header: str, timeout: float,
) -> Response:  # fmt: skip
    """POST `body` to `target` ("/path?query") on host:port; the response, its head read."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        head = [f"POST {target} HTTP/1.1", f"Host: {host_header}",
                f"Content-Length: {len(body)}", "Connection: close",
                "Accept-Encoding: identity"]  # fmt: skip
        head += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        return Response(sock)
    except BaseException:
        sock.close()
        raise
