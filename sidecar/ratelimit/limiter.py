"""Per-caller rate limits: a moving window per (route, caller), counted by the `limits` library, behind our interface.

Only requests the policy and the route's admission (max_body, max_concurrent) let through are counted: a refused
request (401, 403, 413, 503, ...) never spends a caller's budget, so a flood of bad tokens costs what any refusal
costs and cannot use up the budget of callers behind the same address. Without `rate_limit_store` the counts live in
this process (memory_store.py): with several workers each keeps its own, so a caller gets up to workers x requests.
With it they live in Redis (redis_store.py), one budget for every replica; when the store does not answer in
time a request is decided by the store's `on_error`.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter

from sidecar.policy.model import Identity, RateKey, RateLimit, RateLimitStore, Route, StoreFailure
from sidecar.ratelimit.memory_store import ProcessStorage
from sidecar.ratelimit.unavailable import StoreUnavailable
from sidecar.reasons import Reason

if TYPE_CHECKING:
    from sidecar.ratelimit.redis_store import SharedCounts, StoreObserver

__all__ = [
    "ADMITTED",
    "DEFAULT_MAX_KEYS",
    "STORE_RETRY_AFTER",
    "RateCheck",
    "RateLimiter",
    "StoreUnavailable",
    "caller_key",
    "client_network",
]

# A bound on the callers tracked at once (every route together). Each costs about 0.5 KB plus 0.2 KB per request
# in its window. The storage forgets a caller one window after its last counted request; beyond the bound a new
# caller is refused (rate_limited, Retry-After: the window) until some are forgotten: a flood from many addresses
# must not grow memory without bound, nor reach the upstream unlimited.
DEFAULT_MAX_KEYS: Final = 100_000
_NO_VALUE: Final = "-"  # callers without the claim (or address) share one budget
STORE_RETRY_AFTER: Final = 1  # seconds, on a 503 rate_limit_unavailable: the store is asked again after a second


class Decided(Protocol):
    """What the limiter reads of a request's decision (edge/decide.py's `Decision`, frozen: it is never changed)."""

    @property
    def route(self) -> Route | None: ...
    @property
    def identity(self) -> Identity | None: ...
    @property
    def reason(self) -> Reason | None: ...


@dataclass(frozen=True, slots=True)
class RateCheck:
    """What counting one request said: refused (`reason`, with the `retry_after` seconds of its Retry-After), or
    not; and whether the shared store failed, so that its `on_error` decided (`store_error`, for the log)."""

    reason: Reason | None = None  # rate_limited or rate_limit_unavailable; None: within the budget (or uncounted)
    retry_after: int | None = None
    store_error: str | None = None


ADMITTED: Final = RateCheck()


def caller_key(limit: RateLimit, decision: Decided, client_ip: str | None) -> str:
    """Whose budget a request spends: the verified subject or app of one provider (two issuers may both have a
    `sub` "lisa", and they are not the same caller), or the client address (an IPv6 client's network)."""
    if limit.per is RateKey.IP:
        return f"ip:{client_network(client_ip, limit.ipv6_prefix) if client_ip else _NO_VALUE}"
    identity = decision.identity
    if identity is None:
        return f"{limit.per.value}:{_NO_VALUE}"
    value = identity.subject if limit.per is RateKey.SUBJECT else identity.app
    return f"{limit.per.value}:{identity.provider}:{value or _NO_VALUE}"  # provider names hold no ":"


@functools.lru_cache(maxsize=4096)  # bounded: addresses are the client's to choose
def client_network(address: str, ipv6_prefix: int) -> str:
    """The caller an address stands for: an IPv4 address itself (also written IPv4-mapped, `::ffff:a.b.c.d`, as a
    dual-stack listener reports it), an IPv6 address its network of `ipv6_prefix` bits: whoever has one address
    has the whole /64 (SLAAC, privacy addresses), and a budget per address would be no budget."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address  # not an address (none reaches here from a socket or forwarded.origin): its own budget
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))


class RateLimiter:
    """One per process. `hit` counts a request against its route's `rate_limit`, in this process or in the store."""

    def __init__(
        self,
        storage: ProcessStorage | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.time,  # the storage's clock
        store: RateLimitStore | None = None,
        observer: StoreObserver | None = None,  # the shared store's metrics (required with `store`)
    ) -> None:
        self._storage = storage if storage is not None else ProcessStorage(clock)
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._items: dict[RateLimit, RateLimitItem] = {}
        self._max_keys = max_keys
        self._clock = clock
        self._observer = observer
        self._shared: SharedCounts | None = None
        self.use(store)

    def use(self, store: RateLimitStore | None) -> SharedCounts | None:
        """Count in `store` from now on (None: in this process). Returns the shared counts replaced, for the
        caller to close; an unchanged store keeps its connections."""
        current = self._shared.config if self._shared is not None else None
        if store == current:
            return None
        replaced, self._shared = self._shared, None
        if store is None and self._observer is not None:
            self._observer.store_answered()  # no store: nothing fails any more (the gauge may have been 0)
        if store is not None:
            from sidecar.ratelimit.redis_store import SharedCounts  # deferred: only a policy with a store imports redis

            assert self._observer is not None, "a shared store needs an observer"
            self._shared = SharedCounts(store, self._observer)
        return replaced

    def watch_store(self) -> None:
        """Check the shared store in the background from now on (redis_store.py's `watch`); needs the loop."""
        if self._shared is not None:
            self._shared.watch()

    async def hit(self, route: Route, key: str) -> float | None:
        """None: within the budget (and counted); else the seconds until a slot frees. With a shared store,
        raises StoreUnavailable when it does not answer within its timeout."""
        limit = route.rate_limit
        assert limit is not None
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = RateLimitItemPerSecond(limit.requests, limit.window)
        if self._shared is not None:
            return await self._shared.hit(item, route.name, key)
        if len(self._storage.events) >= self._max_keys and item.key_for(route.name, key) not in self._storage.events:
            return float(limit.window)  # full: a new caller waits until the storage forgets some
        if await self._strategy.hit(item, route.name, key):
            return None
        stats = await self._strategy.get_window_stats(item, route.name, key)
        return max(stats.reset_time - self._clock(), 0.0)

    async def admit(self, decision: Decided, client_ip: str | None) -> RateCheck:
        """Count an allowed request; over its budget it is refused `rate_limited` with a Retry-After. When the
        shared store fails, `on_error` decides: allow admits it uncounted (the check names the store's error, for
        the access line), deny refuses it `rate_limit_unavailable`. Refused requests are not counted. `client_ip`
        is the client address (the budget of `per: ip`)."""
        route = decision.route
        if decision.reason is not None or route is None or route.rate_limit is None:
            return ADMITTED
        try:
            wait = await self.hit(route, caller_key(route.rate_limit, decision, client_ip))
        except StoreUnavailable as exc:
            assert self._shared is not None
            if self._shared.config.on_error is StoreFailure.ALLOW:
                return RateCheck(store_error=exc.error)
            return RateCheck(Reason.RATE_LIMIT_UNAVAILABLE, STORE_RETRY_AFTER, exc.error)
        if wait is None:
            return ADMITTED
        return RateCheck(Reason.RATE_LIMITED, max(1, math.ceil(wait)))  # whole seconds, and never "retry now"

    @property
    def callers(self) -> int:
        """Callers tracked now in this process (all routes): what `max_keys` bounds."""
        return len(self._storage.events)

    async def close(self) -> None:
        self._storage.close()
        if self._shared is not None:
            await self._shared.close()
