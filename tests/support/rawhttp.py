"""Raw HTTP/1.1 over a socket: requests exactly as written (no client library cleans the request line up).

httpx and friends normalise a URL before sending it (`/a/../b` becomes `/b`, `#` is cut, spaces are encoded), so a
test of how the sidecar reads a confusing request line has to write the bytes itself.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["RawResponse", "exchange", "request"]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: list[tuple[str, str]]  # names lower-cased, in the order received
    body: bytes
    raw: bytes  # everything the server sent, head included (for scans)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    base_url: str,
    target: bytes,
    method: bytes = b"GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    timeout: float = 30.0,
) -> RawResponse:
    """Send `METHOD target HTTP/1.1` with Host, `headers` and Connection: close to `base_url` (http://host:port)."""
    host = urlsplit(base_url).netloc.encode("ascii")
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: " + host, b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"Content-Length: " + str(len(body)).encode("ascii"))
    return exchange(base_url, b"\r\n".join(lines) + b"\r\n\r\n" + body, timeout)


def exchange(base_url: str, data: bytes, timeout: float = 30.0) -> RawResponse:
    """Write `data`, read until the server closes (bounded by `timeout` per read), parse one response."""
    parts = urlsplit(base_url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None, "tests talk to 127.0.0.1 only"
    received = bytearray()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            received += chunk
    return _parse(bytes(received))


def _parse(raw: bytes) -> RawResponse:
    head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete response head: {raw[:200]!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [(name.strip().lower(), value.strip()) for name, _, value in (h.partition(":") for h in header_lines)]
    found = dict(headers)
    if found.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(rest)
    elif "content-length" in found:
        body = rest[: int(found["content-length"])]
    else:
        body = rest  # delimited by the close
    return RawResponse(int(status_line.split(" ")[1]), headers, body, raw)


def _dechunk(data: bytes) -> bytes:
    body = bytearray()
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(body)
        body += data[:size]
        data = data[size + 2 :]
