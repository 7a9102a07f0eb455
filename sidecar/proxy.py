"""Streaming forward to the upstream through one pooled aiohttp session; client errors become 502/504.

The upstream client lives only here so it can be re-measured and replaced (DESIGN.md §4).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import aiohttp
from yarl import URL

from sidecar.asgi import Receive, Send
from sidecar.decision import Reason, Rejection
from sidecar.upstream import Headers, response_headers

__all__ = ["ClientGone", "Forwarded", "Forwarder", "UpstreamBroken"]


# aiohttp adds these unless told not to; a proxy forwards only what the client sent.
_SKIP_AUTO_HEADERS: Final = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
# The upstream response is buffered up to twice this per exchange (aiohttp pauses reading beyond), and handed on
# in the pieces it arrived in, up to that much at once: bigger writes, fewer passes through the loop (measured in
# BENCHMARKS.md: download through the sidecar).
_READ_BUFFER: Final = 256 * 1024
_LONG_BODY: Final = 256 * 1024  # a response longer than this (or of unknown length) is watched for disconnects


class ClientGone(Exception):
    """The client disconnected while its body was being streamed upstream."""


class UpstreamBroken(Exception):
    """The upstream failed after its response had started: the client connection is aborted."""


class _BodyRefused(Exception):
    """Raised into aiohttp's body writer, which then aborts the upstream request; `_BodyProgress.refused` says why.
    Not an OSError (aiohttp would report that as a network failure), and never seen outside this module."""


@dataclass(slots=True)
class Forwarded:
    status: int
    bytes_in: int
    bytes_out: int
    upstream_seconds: float


class _BodyProgress:
    __slots__ = ("count", "complete", "limit", "timeout", "refused")

    def __init__(self, complete: bool, limit: int | None, timeout: float | None) -> None:
        self.count = 0
        self.complete = complete  # the whole request body has been read from the client
        self.limit = limit  # max_body: more is refused with 413 (a declared length over it never gets here)
        self.timeout = timeout  # body_timeout: the longest wait for the next piece of the body
        self.refused: Reason | None = None  # body_too_large or body_timeout: the upstream request was aborted


class Forwarder:
    """Owns the upstream connection pool."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @classmethod
    def create(cls, pool_limit: int = 256, pool_limit_per_host: int = 0) -> Forwarder:
        connector = aiohttp.TCPConnector(limit=pool_limit, limit_per_host=pool_limit_per_host, ttl_dns_cache=60)
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # pass the upstream's bytes as they are, Content-Encoding and all
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),  # never keep one caller's cookies for another
            timeout=aiohttp.ClientTimeout(total=None),
            read_bufsize=_READ_BUFFER,
        )
        return cls(session)

    async def close(self) -> None:
        await self._session.close()

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
    ) -> Forwarded:
        """Stream the request body up and the response down. `timeout` bounds connecting (a wait for a pooled
        connection included), the wait for the response head once the body is sent, and each silence while the
        response streams. A body over `max_body`, or silent for `body_timeout`, aborts the upstream request and
        raises Rejection(body_too_large / body_timeout)."""
        received = _BodyProgress(not has_body, max_body, body_timeout)
        body = _client_body(receive, received) if has_body else None
        started = time.perf_counter()
        response = await self._open(method, url, headers, body, timeout, received)
        upstream_seconds = time.perf_counter() - started
        try:
            sent = await _relay(response, send, receive if received.complete else None, extra_headers)
        finally:
            response.release()
        return Forwarded(response.status, received.count, sent, upstream_seconds)

    async def _open(
        self,
        method: str,
        url: str,
        headers: Headers,
        body: AsyncIterator[bytes] | None,
        timeout: float,
        received: _BodyProgress,
    ) -> aiohttp.ClientResponse:
        try:
            return await self._session.request(
                method,
                URL(url, encoded=True),  # aiohttp would otherwise rewrite %2F to / (path confusion)
                headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
                data=body,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout, sock_read=timeout),
                compress=None,
            )
        except ClientGone:
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise Rejection(received.refused or Reason.UPSTREAM_TIMEOUT) from exc
        except (aiohttp.ClientError, OSError) as exc:
            if isinstance(exc.__cause__, ClientGone):
                raise ClientGone from exc
            raise Rejection(received.refused or Reason.UPSTREAM_UNREACHABLE) from exc


async def _client_body(receive: Receive, received: _BodyProgress) -> AsyncIterator[bytes]:
    while True:
        try:
            async with asyncio.timeout(received.timeout):  # a timer handle, no task: cheap per chunk
                message = await receive()
        except TimeoutError:
            received.refused = Reason.BODY_TIMEOUT
            raise _BodyRefused from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            received.count += len(chunk)
            if received.limit is not None and received.count > received.limit:
                received.refused = Reason.BODY_TOO_LARGE
                raise _BodyRefused
            yield chunk
        if not message.get("more_body", False):
            received.complete = True
            return


async def _relay(response: aiohttp.ClientResponse, send: Send, receive: Receive | None, extra_headers: Headers) -> int:
    """Stream the upstream response to the client. uvicorn's `send` silently drops data once the client
    has gone, so a long response is watched for disconnects (a task only where the body is long)."""
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": response_headers(response.raw_headers) + extra_headers,
        }
    )
    length = response.content_length
    watcher = None
    if receive is not None and (length is None or length > _LONG_BODY):
        watcher = asyncio.ensure_future(_disconnected(receive))
    sent = 0
    try:
        async for chunk in response.content.iter_any():
            if watcher is not None and watcher.done():
                raise ClientGone
            sent += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise UpstreamBroken from exc
    finally:
        if watcher is not None:
            watcher.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    return sent


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
