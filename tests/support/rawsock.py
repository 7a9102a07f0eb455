"""Raw HTTP/1.1 on a socket for limit tests: exactly these bytes (in parts, stalled, from another loopback source
address), one response read at a time, and whether the server then closed. Every wait is bounded by a timeout."""

from __future__ import annotations

import json
import socket
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Reply", "closed", "connect", "head", "read_reply", "send_raw"]

# Bytes read past the end of one response (pipelined answers can arrive in one read), by socket.
_LEFTOVER: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes
    fields: tuple[tuple[str, str], ...] = ()  # every header line in order (lower-case names): compare these

    def values(self, name: str) -> list[str]:
        """Every value received under this lower-case name."""
        return [value for key, value in self.fields if key == name]

    def json(self) -> Any:
        return json.loads(self.body)


def connect(base_url: str, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    """A connection to the sidecar (on 127.0.0.1) from `source`, any address of 127.0.0.0/8."""
    parts = urlsplit(base_url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None, "tests talk to 127.0.0.1 only"
    return socket.create_connection((parts.hostname, parts.port), timeout=timeout, source_address=(source, 0))


def head(method: str, target: str, headers: Sequence[tuple[str, str]] = (), host: str = "sidecar") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", *(f"{name}: {value}" for name, value in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def read_reply(sock: socket.socket, timeout: float = 10.0) -> Reply:
    """One response (Content-Length or chunked framed, or until close); each recv waits at most `timeout`."""
    sock.settimeout(timeout)
    data = _LEFTOVER.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response head: {data[:200]!r}"
        data += chunk
    raw_head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = raw_head.decode("latin-1").split("\r\n")
    fields = tuple((name.strip().lower(), value.strip()) for name, _, value in (line.partition(":") for line in lines))
    headers = dict(fields)
    if "content-length" in headers:
        size = int(headers["content-length"])
        while len(rest) < size:
            chunk = sock.recv(65536)
            assert chunk, "closed inside the response body"
            rest += chunk
        body, _LEFTOVER[sock] = rest[:size], rest[size:]
    elif headers.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "closed inside the response body"
            rest += chunk
        body = _dechunk(rest)
    else:
        while chunk := sock.recv(65536):
            rest += chunk
        body = rest
    return Reply(int(status_line.split(" ")[1]), headers, body, fields)


def closed(sock: socket.socket, timeout: float = 10.0) -> bool:
    """Whether the server closes the connection within `timeout` (True at EOF or reset; False if it stays open)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def send_raw(base_url: str, data: bytes, source: str = "127.0.0.1", timeout: float = 10.0) -> Reply:
    """Send `data` on a new connection and read one response."""
    with connect(base_url, source, timeout) as sock:
        sock.sendall(data)
        return read_reply(sock, timeout)


def _dechunk(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]
