"""Streaming forward to the upstream through the pooled HTTP/1.1 client (upstream/pool.py); its failures become 502/504.

The ASGI side of a forward: the client's body read and bounded (max_body, body_timeout, min_body_rate), the request
written upstream, the response relayed as it arrives, and what happened reported back to the gate. The client's
exceptions are translated here, at one boundary (`_failure`, as httpx's `map_httpcore_exceptions`): the gate sees
UpstreamFailure (502/504), UpstreamBroken (after the answer started), ClientGone, or a Rejection for a limit of the
route (body_too_large, body_timeout, pool_share_full), never the client's own types.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Final

from sidecar.edge.asgi import Receive, Send
from sidecar.edge.response_urls import ResponseUrls
from sidecar.policy.limits import DEFAULT_POOL_CONNECTIONS, DEFAULT_POOL_IDLE_TIMEOUT, ServerLimits
from sidecar.reasons import Reason, Rejection
from sidecar.upstream.pool import (
    Broken,
    ConnectFailed,
    Connection,
    Origin,
    Pool,
    Response,
    ShareFull,
    Timeout,
    UpstreamError,
    split_url,
)
from sidecar.upstream.target import Headers, response_headers

__all__ = ["UPSTREAM_FAILURES", "ClientGone", "Forwarded", "Forwarder", "UpstreamBroken", "UpstreamFailure"]

_LONG_BODY: Final = 256 * 1024  # a response longer than this (or of unknown length) is watched for disconnects
# Sent with an empty body by aiohttp, curl and browsers alike: some servers refuse these methods without a length.
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
# Sent again on a new connection when a reused one turns out closed before any answer (as Go's net/http does):
# safe methods only, whose whole body, if any, is still in hand.
_REPLAYABLE: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_LAST_CHUNK: Final = b"0\r\n\r\n"
_TLS_ORIGINS: Final = 1024  # (origin, route context) pairs remembered


class ClientGone(Exception):
    """The client disconnected while its body was being streamed upstream."""


class UpstreamBroken(Exception):
    """The upstream failed after its response had started: the client connection is aborted."""


class UpstreamFailure(Exception):
    """The upstream failed before answering: 502 upstream_unreachable or 504 upstream_timeout. Not a Rejection:
    the policy allowed the request, and the failure counts in sidecar_upstream_errors_total, not as a refusal."""

    def __init__(self, reason: Reason, detail: str | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.detail = detail  # why, for the operator's log line (never the client's answer): no URL, no secret


# The upstream client's failures before an answer, most specific first. A pool share in use is the route's own
# limit (503 pool_share_full, a refusal); every other failure, new ones included, is the upstream's.
UPSTREAM_FAILURES: Final[tuple[tuple[type[UpstreamError], Reason], ...]] = (
    (ShareFull, Reason.POOL_SHARE_FULL),
    (Timeout, Reason.UPSTREAM_TIMEOUT),
    (ConnectFailed, Reason.UPSTREAM_UNREACHABLE),
    (Broken, Reason.UPSTREAM_UNREACHABLE),
    (UpstreamError, Reason.UPSTREAM_UNREACHABLE),
)


@dataclass(slots=True)
class Forwarded:
    status: int
    bytes_in: int
    bytes_out: int
    upstream_seconds: float


class _BodyProgress:
    __slots__ = ("count", "complete", "limit", "timeout", "chunked", "rate", "grace", "started", "excused")

    def __init__(
        self, complete: bool, limit: int | None, timeout: float | None, rate: int = 0, grace: float = 0.0
    ) -> None:
        self.count = 0
        self.complete = complete  # the whole request body has been read from the client
        self.limit = limit  # max_body: more is refused with 413 (a declared length over it never gets here)
        self.timeout = timeout  # body_timeout: the longest wait for the next piece of the body
        self.chunked = False  # sent upstream with chunked framing (no length known when the head was written)
        self.rate = rate  # min_body_rate: bytes per second the body must average after `grace` (0: no minimum)
        self.grace = grace
        self.started: float | None = None  # the clock when the body was first asked for
        self.excused = 0.0  # seconds the sidecar, not the client, held the body up (pool, upstream reading)

    def wait_bound(self) -> float | None:
        """The longest wait for the body's next piece: body_timeout, or less if the body so far would then fall
        below min_body_rate (averaged from its start, not counting the time it was held up on our side)."""
        if self.rate <= 0:
            return self.timeout
        now = time.monotonic()
        if self.started is None:
            self.started = now
        on_pace_until = self.started + self.excused + max(self.grace, self.count / self.rate)
        left = max(0.0, on_pace_until - now)
        return left if self.timeout is None else min(self.timeout, left)

    def excuse(self, since: float) -> None:
        """The time since `since` (time.monotonic) was spent waiting on the upstream side: not the client's."""
        self.excused += time.monotonic() - since


class Forwarder:
    """Owns the upstream connection pool."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        # min_body_rate and its grace, from the policy's `limits` (set by the runtime on start and on each reload).
        self.limits = ServerLimits()
        self._tls_origins: dict[tuple[Origin, ssl.SSLContext], Origin] = {}

    def apply(self, limits: ServerLimits) -> None:
        """Take the policy's limits for the bodies of requests forwarded from now on."""
        self.limits = limits

    @classmethod
    def create(
        cls,
        pool_limit: int = DEFAULT_POOL_CONNECTIONS,
        pool_limit_per_host: int = 0,
        idle_timeout: float = DEFAULT_POOL_IDLE_TIMEOUT,
        on_count: Callable[[int], None] | None = None,
        per_route: int = 0,
    ) -> Forwarder:
        """`on_count` is told the number of open upstream connections whenever it changes; `per_route` bounds the
        connections one route's exchanges hold (0: no bound)."""
        return cls(Pool(pool_limit, pool_limit_per_host, idle_timeout, on_count, per_route))

    async def close(self) -> None:
        await self.pool.close()

    async def forward(
        self,
        method: str,
        url: str,
        headers: Headers,
        receive: Receive,
        send: Send,
        timeout: float,
        has_body: bool,
        extra_headers: Headers,
        *,
        max_body: int | None = None,
        body_timeout: float | None = None,
        route: str | None = None,
        urls: ResponseUrls | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Forwarded:
        """Stream the request body up and the response down. `timeout` bounds connecting (a wait for a pooled
        connection included), each wait for the upstream to read the body, the wait for the response head once
        the body is sent, and each silence while the response streams. A body over `max_body`, silent for
        `body_timeout`, or slower than `self.limits.min_body_rate` after its grace period aborts the upstream request
        and raises Rejection(body_too_large / body_timeout). The connection counts against `route`'s share of the
        pool; a share in use for all of `timeout` raises Rejection(pool_share_full). An upstream that fails before
        answering raises UpstreamFailure (upstream_unreachable / upstream_timeout), after: UpstreamBroken. `urls`:
        the route's rules for response headers that name the upstream's URL. `tls`: the route's own client context
        (`tls:`)."""
        origin, target = split_url(url)
        if tls is not None:
            origin = self._through(origin, tls)
        limits = self.limits
        received = _BodyProgress(not has_body, max_body, body_timeout, limits.min_body_rate, limits.min_body_rate_grace)
        first = await _next_piece(receive, received) if has_body else b""  # the body's first piece goes with the head
        request = _request(method, target, origin.host_header, headers, first, received)
        started = time.perf_counter()
        replay = method in _REPLAYABLE and received.complete
        connection: Connection | None = None
        response: Response | None = None
        uploader: asyncio.Future[None] | None = None
        try:
            waiting = time.monotonic()
            connection = await self.pool.acquire(origin, timeout, False, route)
            received.excuse(waiting)  # a wait for a pooled connection is not the client being slow
            response = connection.start(no_body=method == "HEAD")
            connection.write(request, end=received.complete)
            if not received.complete:
                uploader = asyncio.ensure_future(_upload(connection, receive, received, timeout))
                uploader.add_done_callback(partial(_upload_ended, connection=connection, response=response))
            try:
                await _response_head(response, uploader, timeout)
            except Broken:
                if not (replay and connection.reused and not response.started):
                    raise
                # A kept-alive connection the upstream had closed as we sent: once more on a new one.
                self.pool.release(connection)
                connection = None
                connection = await self.pool.acquire(origin, timeout, True, route)
                response = connection.start(no_body=method == "HEAD")
                connection.write(request, end=True)
                await _response_head(response, None, timeout)
            upstream_seconds = time.perf_counter() - started
            shown = response_headers(response.headers, response.status, urls, url, method == "HEAD") + extra_headers
            sent = await _relay(response, send, receive if received.complete else None, shown, timeout)
        except UpstreamError as exc:  # the one place the client's failures are translated
            raise _failure(exc, response is not None and response.head_done, uploader) from exc
        finally:
            if uploader is not None and not uploader.cancel():
                uploader.exception()  # retrieved: its failure, if any, was raised above
            if connection is not None:
                self.pool.release(connection)  # kept only if the exchange left it DONE (upstream/connection.py)
        return Forwarded(response.status, received.count, sent, upstream_seconds)

    def _through(self, origin: Origin, tls: ssl.SSLContext) -> Origin:
        """The origin reached with a route's own context: pooled apart from the same origin reached with another
        (its key names the context), so that a connection is reused only under the trust it was made with."""
        found = self._tls_origins.get((origin, tls))
        if found is None:
            if len(self._tls_origins) >= _TLS_ORIGINS:  # reloads make new contexts: the old entries go
                self._tls_origins.clear()
            found = replace(origin, key=f"{origin.key} tls:{id(tls):x}", context=tls)
            self._tls_origins[(origin, tls)] = found
        return found


def _upload_ended(task: asyncio.Future[None], connection: Connection, response: Response) -> None:
    """A body that failed while its response streams (client gone, max_body, body_timeout) ends the exchange."""
    response.wake()
    if response.head_done and not task.cancelled() and task.exception() is not None:
        connection.abort()


def _failure(exc: UpstreamError, answered: bool, uploader: asyncio.Future[None] | None) -> Exception:
    """What a failed exchange means to the gate: a client gone first; after the response started, a broken
    stream (no second answer can be sent); before, the client's body's own refusal, then the table above."""
    failed = uploader.exception() if uploader is not None and uploader.done() and not uploader.cancelled() else None
    if isinstance(failed, ClientGone):
        return failed
    if answered:
        return UpstreamBroken()
    if isinstance(failed, Rejection):
        return failed
    reason = next(reason for kind, reason in UPSTREAM_FAILURES if isinstance(exc, kind))
    if reason is Reason.POOL_SHARE_FULL:
        return Rejection(reason)
    return UpstreamFailure(reason, str(exc) or None)  # the client's words name no URL or secret (pool.py)


def _request(method: str, target: str, host: bytes, headers: Headers, first: bytes, received: _BodyProgress) -> bytes:
    """The request head, and the body's first piece: one write. Without a Content-Length from the client, a body
    that is already whole gets one; one still streaming goes chunked."""
    try:
        line = f"{method} {target} HTTP/1.1\r\nhost: ".encode("latin-1")
    except UnicodeEncodeError:  # text from the policy's upstream URL beyond Latin-1
        line = f"{method} {target} HTTP/1.1\r\nhost: ".encode()
    parts = [line, host, b"\r\n"]
    has_length = False
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
        has_length = has_length or name == b"content-length"
    if received.complete:
        if not has_length and (first or method in _BODY_METHODS):
            parts.append(b"content-length: %d\r\n" % len(first))
    elif not has_length:
        received.chunked = True
        parts.append(b"transfer-encoding: chunked\r\n")
    parts.append(b"\r\n")
    parts.append(_framed(first, received) if received.chunked else first)
    return b"".join(parts)


def _framed(piece: bytes, received: _BodyProgress) -> bytes:
    framed = b"%x\r\n%b\r\n" % (len(piece), piece) if piece else b""
    return framed + _LAST_CHUNK if received.complete else framed


async def _next_piece(receive: Receive, received: _BodyProgress) -> bytes:
    """The next piece of the client's body; b"" only at its end."""
    while True:
        try:
            async with asyncio.timeout(received.wait_bound()):  # a timer handle, no task: cheap per piece
                message = await receive()
        except TimeoutError:
            raise Rejection(Reason.BODY_TIMEOUT) from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        piece: bytes = message.get("body", b"")
        if piece:
            received.count += len(piece)
            if received.limit is not None and received.count > received.limit:
                raise Rejection(Reason.BODY_TOO_LARGE)
        if not message.get("more_body", False):
            received.complete = True
            return piece
        if piece:
            return piece


async def _upload(connection: Connection, receive: Receive, received: _BodyProgress, timeout: float) -> None:
    """The rest of a streamed body, while the response may already be coming back (full duplex, as aiohttp)."""
    while not received.complete:
        piece = await _next_piece(receive, received)
        connection.write(_framed(piece, received) if received.chunked else piece, end=received.complete)
        waiting = time.monotonic()
        await connection.drain(timeout)
        received.excuse(waiting)  # an upstream that reads slowly holds the client back: not the client's slowness


async def _response_head(response: Response, uploader: asyncio.Future[None] | None, timeout: float) -> None:
    """Wait for the response head: without a deadline while the body is still going up (body_timeout,
    min_body_rate and the upstream's reading bound that), then at most `timeout`."""
    while not response.head_done:
        if response.error is not None:
            raise response.error
        if uploader is not None and uploader.done():
            failed = uploader.exception()
            if failed is not None:
                raise failed
            uploader = None
        await response.wait(None if uploader is not None else timeout)


async def _relay(response: Response, send: Send, receive: Receive | None, headers: Headers, timeout: float) -> int:
    """Stream the upstream response to the client. uvicorn's `send` silently drops data once the client
    has gone, so a long response is watched for disconnects (a task only where the body is long)."""
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    length = response.content_length
    watcher = None
    if receive is not None and not response.complete and (length is None or length > _LONG_BODY):
        watcher = asyncio.ensure_future(_disconnected(receive))
    sent = 0
    try:
        while piece := await response.read(timeout):
            if watcher is not None and watcher.done():
                raise ClientGone
            sent += len(piece)
            last = response.finished  # a short response is whole by now: one message, not two
            await send({"type": "http.response.body", "body": piece, "more_body": not last})
            if last:
                return sent
    finally:
        if watcher is not None:
            watcher.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return sent


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
