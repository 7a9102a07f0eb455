"""A lean HTTP/1.1 client for the data plane: a bounded pool of keep-alive connections (`upstream/connection.py`),
responses parsed by httptools (`upstream/response.py`), bodies streamed with flow control both ways.

It knows nothing of ASGI or the policy (edge/forward.py drives it). It replaced aiohttp on the request path because that
was ~60% of an allowed request's CPU (BENCHMARKS.md, change 9): here a request is one pre-built buffer written in
one call, and the response body is handed on in the pieces it arrived in.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable
from typing import Final

from sidecar.upstream.connection import Connection, Origin, split_url
from sidecar.upstream.resolver import Resolver
from sidecar.upstream.response import Broken, Response, Timeout, UpstreamError, expire
from sidecar.upstream.tls import default_context

__all__ = [
    "Broken",
    "ConnectFailed",
    "Connection",
    "Origin",
    "Pool",
    "Response",
    "ShareFull",
    "Timeout",
    "UpstreamError",
    "split_url",
]


class ConnectFailed(UpstreamError):
    """No connection: refused, unreachable, name not resolved, TLS handshake or certificate refused."""


class ShareFull(UpstreamError):
    """The requester's share of the pool stayed in use for its whole timeout (the upstream was never asked)."""


class Pool:
    """Connections by origin: idle ones reused newest first; at most `limit` open in all and `per_host` to one
    origin (0: no bound). A request waits for a free slot within its timeout, then Timeout.

    A requester may name a `share` (the proxy names the route): the connections in use under one share are at most
    `per_share` (0: no bound), so that one route cannot hold the whole pool. Past it, a request waits within its
    timeout for one of its share's connections to come back, then ShareFull."""

    def __init__(
        self,
        limit: int,
        per_host: int,
        idle_timeout: float,
        on_count: Callable[[int], None] | None = None,
        per_share: int = 0,
        resolver: Resolver | None = None,
    ) -> None:
        self.limit = limit
        self.per_host = per_host
        self.idle_timeout = idle_timeout  # an idle connection older than this is closed, not reused
        self.per_share = per_share
        self._in_use: dict[str, int] = {}  # connections handed out per share, until released
        self._on_count = on_count  # told the number of open connections when it changes (a gauge)
        self._idle: dict[str, list[Connection]] = {}
        self._open = 0
        self._open_by: collections.Counter[str] = collections.Counter()
        self._waiters: list[asyncio.Future[None]] = []
        self._connections: set[Connection] = set()  # every one open, idle or in use
        self._tls: ssl.SSLContext | None = None
        self._names = resolver or Resolver()
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def _bind(self) -> asyncio.AbstractEventLoop:
        """The loop, looked up once: on Python 3.11 each `get_running_loop()` is a getpid(2) (8.5% of an allowed
        request's samples when called per request)."""
        self._loop = asyncio.get_running_loop()
        return self._loop

    async def acquire(
        self, origin: Origin, timeout: float, fresh: bool = False, share: str | None = None
    ) -> Connection:
        loop = self._loop or self._bind()
        deadline = loop.time() + timeout
        if share is not None:
            await self._take_share(share, deadline)
        try:
            connection = await self._acquire(origin, deadline, fresh)
        except BaseException:
            self._give_back(share)
            raise
        connection.share = share
        return connection

    async def _acquire(self, origin: Origin, deadline: float, fresh: bool) -> Connection:
        loop = self._loop or self._bind()
        while True:
            idle = None if fresh else self._take_idle(origin.key, loop.time())
            if idle is not None:
                return idle
            if self._room(origin.key):
                break
            await self._wait_for_slot(deadline - loop.time())
        self._open += 1
        self._open_by[origin.key] += 1
        self._counted()
        try:
            return await self._connect(origin, deadline - loop.time())
        except BaseException:
            self._forget(origin.key)
            raise

    async def _take_share(self, share: str, deadline: float) -> None:
        loop = self._loop or self._bind()
        while self.per_share and self._in_use.get(share, 0) >= self.per_share:
            try:
                await self._wait_for_slot(deadline - loop.time())
            except Timeout:
                raise ShareFull() from None
        self._in_use[share] = self._in_use.get(share, 0) + 1

    def _give_back(self, share: str | None) -> None:
        if share is None:
            return
        count = self._in_use[share] - 1
        if count:
            self._in_use[share] = count
        else:
            del self._in_use[share]
        if self._waiters:
            self._wake_waiters()

    def release(self, connection: Connection) -> None:
        """After an exchange: back to the pool if it left the connection DONE (`Connection.reusable`), else closed
        (reset if its answer did not arrive whole)."""
        self._give_back(connection.share)  # `share` is set again when the connection is next taken
        response = connection.response
        if response is not None:
            response.detach()
        if connection.reusable and not self._closed and not self._over_limit(connection.origin.key):
            connection.recycle()
            connection.idle_since = connection.loop.time()
            self._idle.setdefault(connection.origin.key, []).append(connection)
            self._wake_waiters()
            return
        connection.response = None
        if response is not None and response.complete and response.error is None:
            connection.close()
        else:
            connection.abort()

    def resize(self, limit: int, per_host: int, idle_timeout: float, per_share: int) -> None:
        """New bounds (a policy reload). Connections over a lowered bound are not cut: each closes when its exchange
        ends, and idle ones now; a raised bound lets waiting requests open connections at once."""
        self.limit, self.per_host, self.idle_timeout, self.per_share = limit, per_host, idle_timeout, per_share
        for key, idle in self._idle.items():
            while idle and self._over_limit(key):
                self._evict_oldest(idle)
        self._wake_waiters()

    def _over_limit(self, key: str) -> bool:
        return bool(self.limit and self._open > self.limit or self.per_host and self._open_by[key] > self.per_host)

    async def close(self, grace: float = 1.0) -> None:
        """Close idle connections and wait (at most `grace`) until every connection is closed: at shutdown the
        exchanges still running have ended or been cancelled."""
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
        closing = [connection.closed for connection in self._connections]
        if closing:
            await asyncio.wait(closing, timeout=grace)

    def _take_idle(self, key: str, now: float) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.closing or now - connection.idle_since > self.idle_timeout:
                connection.close()
                continue
            connection.reused = True
            return connection
        return None

    def _room(self, key: str) -> bool:
        if self.per_host and self._open_by[key] >= self.per_host:
            return False
        if not self.limit or self._open < self.limit:
            return True
        for idle in self._idle.values():  # full: an idle connection to another origin gives way
            if idle:
                self._evict_oldest(idle)
                return True
        return False

    def _evict_oldest(self, idle: list[Connection]) -> None:
        """Close the oldest of these idle connections and free its slot now (not again at its connection_lost)."""
        connection = idle.pop(0)
        self._connections.discard(connection)
        connection.close()
        self._forget(connection.origin.key)

    async def _wait_for_slot(self, remaining: float) -> None:
        if remaining <= 0:
            raise Timeout()
        loop = self._loop or self._bind()
        waiter = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(remaining, expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    async def _connect(self, origin: Origin, timeout: float) -> Connection:
        loop = self._loop or self._bind()
        deadline = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._names.addresses(origin.host, origin.port, loop)  # at least one
                for left in range(len(addresses), 0, -1):  # in turn (uvloop has no happy eyeballs)
                    address, port = addresses[-left]
                    share = address_timeout(deadline - loop.time(), left)
                    try:
                        connection = await self._dial(origin, address, port, share)
                        break
                    except OSError:  # its share spent (TimeoutError), refused, TLS refused (ssl.SSLError)
                        if left == 1:  # none took it: the last one's failure; look the name up again next time
                            self._names.forget(origin.host, origin.port)
                            raise
        except TimeoutError:
            raise Timeout() from None
        except OSError as exc:
            raise ConnectFailed(_connect_cause(exc)) from exc
        self._connections.add(connection)
        return connection

    async def _dial(self, origin: Origin, address: str, port: int, timeout: float | None) -> Connection:
        """One address, a new Connection (a CLOSED one stays closed); the TLS name is the host's."""
        loop = self._loop or self._bind()
        connection = Connection(origin, loop, self._lost)
        tls = (origin.context or self._tls_context()) if origin.tls else None  # a route's own `tls:`, or the default
        async with asyncio.timeout(timeout):
            await loop.create_connection(
                lambda: connection, address, port, ssl=tls, server_hostname=origin.host if tls else None
            )
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:  # the system's CAs, hostname checked, X.509-strict (upstream/tls.py)
            self._tls = default_context()
        return self._tls

    def _lost(self, connection: Connection) -> None:
        """A connection's socket closed. Only one the pool counts: one lost during its connect is counted down by
        `_acquire`, an evicted one was at its eviction."""
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        idle = self._idle.get(connection.origin.key)
        if idle and connection in idle:  # lost while idle: the upstream closed it
            idle.remove(connection)
        self._forget(connection.origin.key)

    def _forget(self, key: str) -> None:
        self._open -= 1
        self._counted()
        self._open_by[key] -= 1
        if not self._open_by[key]:
            del self._open_by[key]
        self._wake_waiters()

    def _counted(self) -> None:
        if self._on_count is not None:
            self._on_count(self._open)

    def _wake_waiters(self) -> None:
        """Every waiter looks again: a slot or an idle connection may be for any origin."""
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def name_lookups(self) -> int:
        """Host names asked of the system resolver so far (cached for a minute, see `upstream/resolver.py`)."""
        return self._names.lookups


# An address that is not the last may take at most this long to connect (TCP and TLS), even when the route's timeout
# would give it more: a black-holed address (a dead node, a firewall dropping SYNs) must not take the whole timeout
# from the addresses after it. Envoy's default connect_timeout is the same 5 s.
ADDRESS_TIMEOUT_CAP: Final = 5.0


def address_timeout(remaining: float, left: int) -> float | None:
    """How long one address may take to connect when it and the `left - 1` addresses after it share the `remaining`
    seconds of the route's timeout: an equal share, at most ADDRESS_TIMEOUT_CAP (Go's net.Dialer spreads its
    timeout over the addresses the same way); the last address may use all that remains (None: the route's
    timeout bounds it)."""
    return None if left <= 1 else min(remaining / left, ADDRESS_TIMEOUT_CAP)


def _connect_cause(exc: OSError) -> str:
    """What the log may say of a failed connect: the error's type, and for TLS OpenSSL's own words (never the
    exception's message, which could quote a URL)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"{type(exc).__name__}: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"{type(exc).__name__}: {exc.reason}"
    return type(exc).__name__
