"""An upstream's response as it arrives, parsed by httptools (llhttp, the parser uvicorn serves with): the head
within its limits, then the body pieces, reading paused while too much waits. Strict: what HTTP/1.1 does not
allow fails the response (Broken), never the parser's caller; `fuzz` target `upstream_response` explores it.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Final, Protocol

import httptools

__all__ = ["Broken", "Link", "Response", "Timeout", "UpstreamError", "expire"]

_MAX_HEAD: Final = 64 * 1024  # status line and headers of a response: more is a broken upstream, not a response
_MAX_HEADERS: Final = 256
_HIGH_WATER: Final = 512 * 1024  # response bytes waiting for the client before reading the upstream pauses


class UpstreamError(Exception):
    """The exchange with the upstream failed; the connection is not reused."""


class Timeout(UpstreamError):
    """The upstream was silent for the whole timeout (connecting, a free pool slot, the response, a write)."""


class Broken(UpstreamError):
    """The connection dropped, or the upstream sent something HTTP/1.1 does not allow."""


class _Overflow(Exception):
    """Raised from a parser callback to stop httptools: the head is too large or not one HTTP/1.1 lets us relay, or a
    second response began."""


class Link(Protocol):
    """What a response needs of its connection."""

    loop: asyncio.AbstractEventLoop

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def abort(self) -> None: ...


class Response:
    """One response as it arrives: the head, then the body pieces, reading paused while too much waits."""

    def __init__(self, connection: Link, no_body: bool) -> None:
        self._connection = connection
        self._parser = httptools.HttpResponseParser(self)
        self._no_body = no_body  # the answer to HEAD: headers only, whatever its Content-Length says
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.content_length: int | None = None
        self._chunked = False
        self._head_size = 0
        self._quiet = 0  # bytes in a row with no head done, no body and no end: a head, or trailers
        self._moved = False  # in this feed: the final head done, a body byte or the end
        self._interim = False  # in a 1xx response: skipped, the final one follows
        self.started = False  # a byte of the response has arrived
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.error: UpstreamError | None = None
        self._pieces: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.complete:  # a second response nobody asked for: the connection cannot be trusted further
            raise _Overflow

    def on_status(self, status: bytes) -> None:
        self._count(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # a trailer field (RFC 9110 §6.5): not merged into the head already passed on
            return
        self._count(len(name) + len(value))
        if len(self.headers) >= _MAX_HEADERS:
            raise _Overflow
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if not 100 <= status <= 599:  # llhttp takes any three digits
            raise _Overflow
        if status < 200:  # 100 Continue, 103 Early Hints: not passed on (a proxy may drop them, RFC 9110 §15.2)
            self._interim = True
            self.headers = []
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        codings: list[bytes] = []
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" and value.strip().isdigit():  # llhttp allows whitespace after it
                self.content_length = int(value)
            elif lowered == b"transfer-encoding":
                codings += (coding.strip() for coding in value.lower().split(b","))
        if codings:
            # The body is taken apart and framed again for the client: `chunked` alone can be relayed. Another
            # coding (`gzip, chunked`, or `gzip` framed by the connection's end) would be lost on the way, the
            # client reading the coded bytes as the content.
            if [coding for coding in codings if coding] != [b"chunked"]:
                raise _Overflow
            self._chunked = True
        self.head_done = True
        self._moved = True
        if self._no_body:
            self.complete = True
        self.wake()

    def on_body(self, body: bytes) -> None:
        if self._interim:  # a 1xx has no content (RFC 9110 §15.2), though llhttp reads one for 104-199 if framed
            raise _Overflow
        self._moved = True
        if self.complete:  # bytes after the answer to HEAD
            self.keep_alive = False
            return
        self._pieces.append(body)
        self._buffered += len(body)
        if self._buffered >= _HIGH_WATER and not self._paused:
            self._paused = True
            self._connection.pause_reading()
        self.wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._moved = True
        self.complete = True
        self.wake()

    # from the connection
    def feed(self, data: bytes) -> None:
        self.started = True
        self._moved = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.complete:  # more than the one response
                self.keep_alive = False
            else:
                self.fail(Broken(f"invalid response: {type(exc).__name__}"))
        except httptools.HttpParserUpgrade:
            self.fail(Broken("the upstream switched protocols unasked"))
        # httptools buffers a header name or value whole before on_header: bound the bytes of an unfinished head
        # (1xx ones included) or of trailers as they arrive, not only as the callbacks report them.
        self._quiet = 0 if self._moved else self._quiet + len(data)
        if self._quiet > _MAX_HEAD and not self.complete:
            self.fail(Broken("the response head or trailers are too large"))

    def ended(self) -> None:
        """The upstream closed its side: the end of a body without framing, else a response cut short."""
        if self.complete:
            return
        if self.head_done and self.content_length is None and not self._chunked:
            self.complete = True
            self.keep_alive = False
            self.wake()
        else:
            self.fail(Broken("the upstream closed the connection mid-response"))

    def fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.keep_alive = False
        self._connection.abort()
        self.wake()

    # for the proxy (edge/forward.py waits for the head itself: without a deadline while the body still goes up)
    @property
    def finished(self) -> bool:
        """The whole body has been read by `read()`."""
        return self.complete and not self._pieces and self.error is None

    async def read(self, timeout: float) -> bytes:
        """The body that has arrived since the last read, at least one byte; b"" once the body is complete."""
        while True:
            if self._pieces:
                data = self._pieces.popleft() if len(self._pieces) == 1 else b"".join(self._pieces)
                self._pieces.clear()
                self._buffered = 0
                if self._paused:
                    self._paused = False
                    self._connection.resume_reading()
                return data
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self.wait(timeout)

    async def wait(self, timeout: float | None) -> None:
        """Until something happens to this response (or `wake()`), or Timeout."""
        loop = self._connection.loop
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def detach(self) -> None:
        """Done with: the parser lets go of this response's callbacks. Without it each exchange left a reference
        cycle (response -> parser -> bound callbacks) for the collector: 11 objects a request."""
        self._parser = _DETACHED

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _count(self, size: int) -> None:
        self._head_size += size + 4
        if self._head_size > _MAX_HEAD:
            raise _Overflow


_DETACHED: Final = httptools.HttpResponseParser(object())  # no callbacks: what a finished response points to


def expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(Timeout())
