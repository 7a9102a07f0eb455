"""Rate-limit counts shared by every replica: limits' async Redis storage (its moving window, one atomic script on
the server per hit), with every call held to the store's timeout and each failure classified, counted and observed.

A store that failed is left alone for RETRY_INTERVAL: the requests meanwhile are decided by `on_error` at once
instead of each waiting out the timeout, and the first request after it tries again (recovery needs no restart).
Besides, each worker PINGs the store every CHECK_INTERVAL (`watch`), from start and without traffic: the health
gauge and the log follow the store even in a quiet worker, and the first connection (TLS set-up included) is made
before the first request needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import redis.asyncio
import redis.asyncio.retry
import redis.backoff
import redis.exceptions
from limits import RateLimitItem
from limits.aio.storage import RedisSentinelStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from sidecar.observe.log import logger
from sidecar.policy.model import RateLimitStore
from sidecar.ratelimit.unavailable import StoreUnavailable

__all__ = ["CHECK_INTERVAL", "RETRY_INTERVAL", "SharedCounts", "StoreObserver", "classify"]

RETRY_INTERVAL: Final = 1.0  # seconds a failed store is not asked
CHECK_INTERVAL: Final = 5.0  # seconds between two background PINGs of the store (each held to the store's timeout)
_FAILURES: Final = (TimeoutError, redis.exceptions.RedisError, OSError)


class StoreObserver(Protocol):
    def store_failed(self, error: str) -> None: ...

    def store_answered(self) -> None: ...


def classify(exc: BaseException) -> str:
    """The `error` label for what went wrong; never the exception's text (it may quote the URL)."""
    if isinstance(exc, TimeoutError | redis.exceptions.TimeoutError):
        return "timeout"
    if isinstance(exc, redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError):
        return "auth"
    if isinstance(exc, redis.exceptions.NoPermissionError | redis.exceptions.AuthenticationWrongNumberOfArgsError):
        return "auth"
    if isinstance(exc, redis.exceptions.ConnectionError | OSError):
        return "unreachable"
    return "error"


def where(url: str) -> str:
    """The host:port (several, comma-separated, for Sentinel) a URL names, for the log: never its credentials."""
    return urlsplit(url).netloc.rpartition("@")[2]


class _SharedContextSSLConnection(redis.asyncio.SSLConnection):
    """redis-py's TLS connection on one SSL context for the whole pool: redis-py builds a new context (the system's
    CA bundle read, 100-250 ms on the event loop) for every connection it opens otherwise."""

    def __init__(self, *, shared_ssl_context: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ssl_context = shared_ssl_context


def _storage(config: RateLimitStore) -> tuple[RedisStorage, redis.asyncio.ConnectionPool | None]:
    """limits' storage for the URL, on redis-py; for one server, on a pool we own (so that `close` can end it)."""
    options: dict[str, Any] = {"socket_timeout": config.timeout, "socket_connect_timeout": config.timeout}
    # One immediate retry on a new connection: after Redis restarted, each idle pooled connection (the checks keep
    # a second one) is dead, and would otherwise fail one request each, decided by on_error and resting the store.
    # A retry is safe: the dead connection's command never reached the new server. The store's timeout bounds both.
    options["retry"] = redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 1)
    if config.password is not None:
        options["password"] = config.password  # wins over the URL's: limits does so for Sentinel, and see below
    uri = "async+" + config.url
    if urlsplit(config.url).scheme == "redis+sentinel":
        # use_replicas=False: Retry-After is read from the primary that counted, never from a lagging replica.
        sentinel = RedisSentinelStorage(
            uri, implementation="redispy", key_prefix=config.prefix, use_replicas=False, **options
        )
        return sentinel, None
    pool = redis.asyncio.ConnectionPool.from_url(config.url, **options)
    if config.password is not None:  # redis-py lets the URL's password win; `password:` is the explicit one
        pool.connection_kwargs["password"] = config.password
    if pool.connection_class is redis.asyncio.SSLConnection:  # rediss://: one context, built once (off the loop)
        pool.connection_class = _SharedContextSSLConnection
        pool.connection_kwargs["shared_ssl_context"] = redis.asyncio.SSLConnection(**pool.connection_kwargs).ssl_context
    given: dict[str, Any] = {"connection_pool": pool}  # limits hands its options to redis-py (typed narrower)
    return RedisStorage(uri, implementation="redispy", key_prefix=config.prefix, **given), pool


class SharedCounts:
    """One per worker process and store configuration."""

    def __init__(
        self, config: RateLimitStore, observer: StoreObserver, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._observer = observer
        self._clock = clock
        self._storage, self._pool = _storage(config)
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._retry_at = -1.0  # monotonic time before which the store is not asked again
        self._up: bool | None = None  # as last told to the observer (told only of changes: a gauge write each)
        self._watching: asyncio.Task[None] | None = None

    async def hit(self, item: RateLimitItem, route: str, key: str) -> float | None:
        """None: within the budget (and counted); else the seconds until a slot frees. Raises StoreUnavailable
        at once while the store is resting after a failure, else after at most the store's timeout."""
        if self._clock() < self._retry_at:
            raise StoreUnavailable("resting")  # not asked: not another error of the store
        deadline = asyncio.get_running_loop().time() + self.config.timeout  # one for both calls
        try:
            async with asyncio.timeout_at(deadline):
                counted = await self._strategy.hit(item, route, key)
        except _FAILURES as exc:
            raise StoreUnavailable(self._failed(exc)) from exc
        self._answered()
        if counted:
            return None
        try:
            async with asyncio.timeout_at(deadline):
                stats = await self._strategy.get_window_stats(item, route, key)
        except _FAILURES as exc:
            self._failed(exc)
            return float(item.get_expiry())  # over the budget all the same: a whole window is the safe wait
        return max(stats.reset_time - time.time(), 0.0)  # limits stamps entries with time.time()

    async def check(self) -> bool:
        """PING the store through the connections the counts use, within the store's timeout; the gauge (and the
        log, on a change) follow. Builds the TLS context first, in a thread, so the loop never waits on it."""
        try:
            if self._pool is not None and self._pool.connection_class is _SharedContextSSLConnection:
                await asyncio.to_thread(self._pool.connection_kwargs["shared_ssl_context"].get)
            bridge: Any = self._storage.bridge  # limits' redis-py bridge: the client the counts use (or the primary)
            async with asyncio.timeout(self.config.timeout):
                await bridge.get_connection().ping()
        except _FAILURES as exc:
            self._failed(exc)
            return False
        self._retry_at = -1.0  # back: the next request asks it, without waiting out the rest
        self._answered()
        return True

    def watch(self, interval: float = CHECK_INTERVAL) -> None:
        """Check the store now, then every `interval` until `close`: the health of a quiet worker is known too."""
        if self._watching is None:
            self._watching = asyncio.ensure_future(self._watch(interval))

    async def _watch(self, interval: float) -> None:
        while True:
            await self.check()
            await asyncio.sleep(interval)

    def _failed(self, exc: BaseException) -> str:
        error = classify(exc)
        self._retry_at = self._clock() + RETRY_INTERVAL
        if self._up is not False:  # a change: one line per outage and worker, never one per request
            fields = {"error": error, "store": where(self.config.url)}
            logger.warning("rate-limit store failing", extra={"fields": fields})
        self._up = False
        self._observer.store_failed(error)
        return error

    def _answered(self) -> None:
        if not self._up:
            if self._up is False:
                logger.info("rate-limit store answers again", extra={"fields": {"store": where(self.config.url)}})
            self._up = True
            self._observer.store_answered()

    async def close(self) -> None:
        """Ends the checks and the connections to the store (a reload that changes or drops `rate_limit_store`)."""
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        if self._pool is not None:
            await self._pool.disconnect()
            return
        # Through Sentinel: limits keeps redis-py's clients on its bridge and has no close of its own.
        bridge: Any = self._storage.bridge
        await bridge.storage.aclose()
        for sentinel in bridge.sentinel.sentinels:
            await sentinel.aclose()
