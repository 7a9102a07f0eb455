"""One upstream HTTP/1.1 connection (an asyncio protocol: one response at a time, flow control both ways), and
where it goes: the origin of a URL and the request target sent as written."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

from sidecar.upstream.response import Broken, Response, expire

__all__ = ["Connection", "Origin", "split_url"]


@dataclass(frozen=True, slots=True)
class Origin:
    key: str  # scheme://host:port, the pool's key
    host: str  # for connecting and TLS server name: no brackets around IPv6
    port: int
    tls: bool
    host_header: bytes  # as aiohttp and browsers send it: IPv6 in brackets, the port only when not the default
    context: ssl.SSLContext | None = None  # a route's own `tls:` (its key tells its connections apart); None: default


@functools.lru_cache(maxsize=1024)
def _origin(origin: str) -> Origin:
    parts = urlsplit(origin)
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    host = parts.hostname or ""
    port = parts.port or default
    shown = f"[{host}]" if ":" in host else host
    header = shown if port == default else f"{shown}:{port}"
    return Origin(f"{parts.scheme}://{shown}:{port}", host, port, tls, header.encode("idna"))


def split_url(url: str) -> tuple[Origin, str]:
    """`scheme://host[:port]/path?query` into the origin and the request target, sent as written (no re-encoding:
    `%2F` stays `%2F`)."""
    start = url.index("//") + 2
    end = min((i for i in (url.find("/", start), url.find("?", start)) if i != -1), default=len(url))
    target = url[end:]
    if not target.startswith("/"):
        target = "/" + target
    return _origin(url[:end]), target


class Connection(asyncio.Protocol):
    """One upstream connection; at most one response at a time (no pipelining)."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop, on_lost: Callable[[Connection], None]) -> None:
        self.origin = origin
        self._on_lost = on_lost  # the pool's bookkeeping
        self.loop = loop
        self._transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.lost = False
        self.reused = False
        self.idle_since = -1.0  # when it was last put back in the pool; -1 while in use
        self.share: str | None = None  # whose share of the pool it counts against while in use
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()  # done at connection_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for: the next request must not read them as its answer
            self.abort()
            return
        self.response.feed(data)

    def eof_received(self) -> bool:
        if self.response is not None:
            self.response.ended()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.closed.done():
            self.closed.set_result(None)
        if self.response is not None:
            if isinstance(exc, ssl.SSLError) and exc.reason:  # TLS 1.3: a refused client certificate shows only now
                self.response.fail(Broken(f"TLS ended: {type(exc).__name__}: {exc.reason}"))
            self.response.ended()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._on_lost(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def start(self, no_body: bool) -> Response:
        self.response = Response(self, no_body)
        return self.response

    def write(self, data: bytes) -> None:
        if self.lost or self._transport is None:
            raise Broken("the upstream closed the connection")
        self._transport.write(data)

    async def drain(self, timeout: float) -> None:
        """Wait while the upstream is not reading what was written (at most `timeout`)."""
        if self._write_paused and not self.lost:
            loop = self.loop
            drained = self._drained = loop.create_future()
            timer = loop.call_later(timeout, expire, drained)
            try:
                await drained
            finally:
                timer.cancel()
                self._drained = None
        if self.lost:
            raise Broken("the upstream closed the connection")

    def pause_reading(self) -> None:
        if self._transport is not None and not self.lost:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self.lost:
            self._transport.resume_reading()

    @property
    def closing(self) -> bool:
        return self.lost or self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Reset, not a graceful close: an upstream reading a request body sees it cut short."""
        if self._transport is not None:
            self._transport.abort()
