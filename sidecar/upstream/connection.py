"""One upstream HTTP/1.1 connection (an asyncio protocol: one exchange at a time, its life a `State`, flow control
both ways), and where it goes: the origin of a URL and the request target sent as written."""

from __future__ import annotations

import asyncio
import enum
import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast
from urllib.parse import urlsplit

from sidecar.upstream.response import Broken, Response, expire

__all__ = ["Connection", "Origin", "State", "split_url"]


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


class State(enum.Enum):
    """Where one connection is in its life. `Connection._enter` is the only place it changes, along `_NEXT`."""

    CONNECTING = enum.auto()  # the TCP (and TLS) handshake is under way
    IDLE = enum.auto()  # open, no exchange: just connected, or back in the pool; a byte received now closes it
    SENDING = enum.auto()  # the request is being written; its answer may already be arriving (an early answer)
    RECEIVING = enum.auto()  # the request is all written; its answer is awaited or arriving
    DONE = enum.auto()  # the exchange is over and the connection fit for the next one (`Connection._answered`)
    CLOSED = enum.auto()  # closed, reset or lost: never used again


_NEXT: Final[dict[State, frozenset[State]]] = {
    State.CONNECTING: frozenset({State.IDLE, State.CLOSED}),
    State.IDLE: frozenset({State.SENDING, State.CLOSED}),
    # DONE straight from SENDING: the answer was whole before the request's last byte was written
    State.SENDING: frozenset({State.RECEIVING, State.DONE, State.CLOSED}),
    State.RECEIVING: frozenset({State.DONE, State.CLOSED}),
    State.DONE: frozenset({State.IDLE, State.CLOSED}),
    State.CLOSED: frozenset(),
}


class Connection(asyncio.Protocol):
    """One upstream connection; at most one exchange at a time (no pipelining), its life a `State`. It is reused
    only from DONE: the request all written, and its answer complete, without error, keep-alive on both sides and
    nothing received after it (`_answered`, the one rule, as httpcore's "our side and their side DONE")."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop, on_lost: Callable[[Connection], None]) -> None:
        self.origin = origin
        self._on_lost = on_lost  # the pool's bookkeeping
        self.loop = loop
        self.state = State.CONNECTING
        self._transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.reused = False
        self.idle_since = 0.0  # when it was last put back in the pool (read only while IDLE)
        self.share: str | None = None  # whose share of the pool it counts against while in use
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self.closed: asyncio.Future[None] = loop.create_future()  # done at connection_lost

    def _enter(self, state: State) -> None:
        if state not in _NEXT[self.state]:
            raise RuntimeError(f"upstream connection: no way from {self.state.name} to {state.name}")
        self.state = state

    def _answered(self) -> bool:
        """The answer leaves the connection fit for reuse: complete, no error, keep-alive on both sides (the parser
        turns `keep_alive` off for bytes after the answer in the same read)."""
        response = self.response
        return response is not None and response.complete and response.error is None and response.keep_alive

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._enter(State.IDLE)

    def data_received(self, data: bytes) -> None:
        if self.state is State.SENDING or self.state is State.RECEIVING:
            cast(Response, self.response).feed(data)
            self._settle()
        elif self.state is not State.CLOSED:  # bytes nobody asked for: never read as the next request's answer
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        """Also at the upstream's end of the stream (asyncio's default `eof_received` closes our side): the end of
        an answer framed by the close, else an answer cut short."""
        if self.state is not State.CLOSED:
            self._enter(State.CLOSED)
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

    # the exchange
    def start(self, no_body: bool) -> Response:
        """A new exchange on an IDLE connection (on a CLOSED one, `write` then raises Broken)."""
        self.response = Response(self, no_body)
        if self.state is not State.CLOSED:
            self._enter(State.SENDING)
        return self.response

    def write(self, data: bytes, end: bool = False) -> None:
        """Part of the request; `end`: its last part."""
        if self.state is not State.SENDING:
            raise Broken("the upstream closed the connection")
        cast(asyncio.Transport, self._transport).write(data)
        if end:
            self._enter(State.DONE if self._answered() else State.RECEIVING)

    def _settle(self) -> None:
        """After the upstream sent something: the exchange is DONE once the request is all written and answered."""
        if self.state is State.RECEIVING and self._answered():
            self._enter(State.DONE)

    async def drain(self, timeout: float) -> None:
        """Wait while the upstream is not reading what was written (at most `timeout`)."""
        if self._write_paused and self.state is not State.CLOSED:
            loop = self.loop
            drained = self._drained = loop.create_future()
            timer = loop.call_later(timeout, expire, drained)
            try:
                await drained
            finally:
                timer.cancel()
                self._drained = None
        if self.state is State.CLOSED:
            raise Broken("the upstream closed the connection")

    def pause_reading(self) -> None:
        if self.state is not State.CLOSED:
            cast(asyncio.Transport, self._transport).pause_reading()

    def resume_reading(self) -> None:
        if self.state is not State.CLOSED:  # resuming a transport that reads is a no-op (asyncio's and uvloop's)
            cast(asyncio.Transport, self._transport).resume_reading()

    # the pool's side
    @property
    def reusable(self) -> bool:
        return self.state is State.DONE

    @property
    def closing(self) -> bool:
        """Not fit to be taken from the pool: not IDLE, or the transport is shutting down."""
        return self.state is not State.IDLE or cast(asyncio.Transport, self._transport).is_closing()

    def recycle(self) -> None:
        """DONE to IDLE (back in the pool), reading again if its answer had paused it: an idle connection must
        see the upstream close it, or send bytes unasked."""
        self._enter(State.IDLE)
        self.response = None
        self.resume_reading()

    def close(self) -> None:
        if self.state is not State.CLOSED:
            self._enter(State.CLOSED)
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Reset, not a graceful close: an upstream reading a request body sees it cut short."""
        if self.state is not State.CLOSED:
            self._enter(State.CLOSED)
        if self._transport is not None:
            self._transport.abort()
