"""Per-caller rate limits: a moving window per (route, caller), counted by the `limits` library, behind our interface.

Only requests the policy allows are counted: a refused request (401, 403, ...) never spends a caller's budget, so a
flood of bad tokens costs what any refusal costs and cannot use up the budget of callers behind the same address.
The counts live in this process (limits' MemoryStorage, with our sweep for expired entries): with several workers
each keeps its own, so a caller gets up to workers x requests. limits' Redis storage is how replicas will share
counts; only the storage given to `RateLimiter` changes then.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import ipaddress
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from sidecar.decision import Reason
from sidecar.policy.model import RateKey, RateLimit, Route

if TYPE_CHECKING:  # sidecar.decide imports the runtime, which holds a RateLimiter
    from sidecar.decide import Decision

__all__ = ["DEFAULT_MAX_KEYS", "SWEEP_INTERVAL", "ProcessStorage", "RateLimiter", "caller_key", "client_network"]

# A bound on the callers tracked at once (every route together). Each costs about 0.5 KB plus 0.2 KB per request
# in its window. The storage forgets a caller one window after its last counted request; beyond the bound a new
# caller is refused (rate_limited, Retry-After: the window) until some are forgotten: a flood from many addresses
# must not grow memory without bound, nor reach the upstream unlimited.
DEFAULT_MAX_KEYS: Final = 100_000
_NO_VALUE: Final = "-"  # callers without the claim (or address) share one budget
SWEEP_INTERVAL: Final = 1.0  # seconds between two sweeps for expired entries; they linger at most this much longer
_SWEEP_STEP: Final = 1_000  # callers pruned between two yields to the event loop


def caller_key(limit: RateLimit, decision: Decision, client_ip: str | None) -> str:
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


class ProcessStorage(MemoryStorage):
    """limits' MemoryStorage (its counting, its moving window), with a cheaper sweep for expired entries.

    Upstream starts a sweep after every hit once the last one is done, and sweeps with one thread hop per caller:
    about 30 us a request, and for 100,000 callers 4 s in which the event loop ran at a third of its speed (both
    measured here). This one sweeps at most once per SWEEP_INTERVAL and prunes in place on the loop, which is safe
    without the per-caller locks because no await splits the work on one caller (nor limits' acquire_entry)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock  # the clock limits stamps entries with
        self._next_sweep = -math.inf

    # The two private hooks limits' acquire_entry reaches through name mangling. limits is pinned; a test fails if
    # the schedule hook is no longer called, and were the sweep hook renamed, limits' own sweep would run (slower).
    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = self._clock()
        if now >= self._next_sweep and (self.timer is None or self.timer.done()):
            self._next_sweep = now + SWEEP_INTERVAL
            self.timer = asyncio.create_task(self._MemoryStorage__expire_events())

    async def _MemoryStorage__expire_events(self) -> None:
        for done, key in enumerate(list(self.events), start=1):
            events = self.events.get(key)
            if events:  # newest first: cut at the first entry that has expired
                del events[bisect.bisect_left(events, -self._clock(), key=lambda entry: -entry.expiry) :]
            if not events:
                self.events.pop(key, None)
                self.locks.pop(key, None)
            if done % _SWEEP_STEP == 0:
                await asyncio.sleep(0)


class RateLimiter:
    """One per process. `hit` counts a request against its route's `rate_limit`."""

    def __init__(
        self,
        storage: ProcessStorage | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.time,  # the storage's clock: limits' MemoryStorage reads time.time()
    ) -> None:
        self._storage = storage if storage is not None else ProcessStorage(clock)
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._items: dict[RateLimit, RateLimitItem] = {}
        self._max_keys = max_keys
        self._clock = clock

    async def hit(self, route: Route, key: str) -> float | None:
        """None: within the budget (and counted); else the seconds until a slot frees."""
        limit = route.rate_limit
        assert limit is not None
        item = self._items.get(limit)
        if item is None:
            item = self._items[limit] = RateLimitItemPerSecond(limit.requests, limit.window)
        if len(self._storage.events) >= self._max_keys and item.key_for(route.name, key) not in self._storage.events:
            return float(limit.window)  # full: a new caller waits until the storage forgets some
        if await self._strategy.hit(item, route.name, key):
            return None
        stats = await self._strategy.get_window_stats(item, route.name, key)
        return max(stats.reset_time - self._clock(), 0.0)

    async def admit(self, decision: Decision, entry: dict[str, Any]) -> None:
        """Count an allowed request; over its budget the decision becomes `rate_limited` with a Retry-After.
        Refused requests are not counted. The access-log `entry` gives the client address, and gets the reason."""
        route = decision.route
        if decision.reason is not None or route is None or route.rate_limit is None:
            return
        wait = await self.hit(route, caller_key(route.rate_limit, decision, entry.get("client_ip")))
        if wait is None:
            return
        decision.reason = Reason.RATE_LIMITED
        decision.retry_after = max(1, math.ceil(wait))  # whole seconds, and never "retry now"
        entry.update(reason=Reason.RATE_LIMITED.value, retry_after=decision.retry_after)

    @property
    def callers(self) -> int:
        """Callers tracked now (all routes): what `max_keys` bounds."""
        return len(self._storage.events)
