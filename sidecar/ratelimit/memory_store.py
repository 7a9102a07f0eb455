"""Rate-limit counts in this process: a moving window per key, as a storage behind limits' public storage interface.

limits' own MemoryStorage sweeps for expired entries after every hit, with one thread hop per caller: about 30 us a
request, and for 100,000 callers 4 s in which the event loop ran at a third of its speed (both measured here); its
sweep can be changed only through name-mangled private methods. This storage implements the interface limits
documents for storages (`Storage`, `MovingWindowSupport`) with limits' moving-window rule (the one its Redis script
applies too), and sweeps at most once per SWEEP_INTERVAL, in place on the loop: no await splits the work on a key.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections.abc import Callable
from typing import Final

from limits.aio.storage import MovingWindowSupport, Storage

__all__ = ["SWEEP_INTERVAL", "ProcessStorage"]

SWEEP_INTERVAL: Final = 1.0  # seconds between two sweeps for expired entries; they linger at most this much longer
_SWEEP_STEP: Final = 1_000  # keys pruned between two yields to the event loop


def _newest_first(expiry: float) -> float:
    return -expiry


class ProcessStorage(Storage, MovingWindowSupport):
    """Per key, the expiry times of the requests it counted, newest first (at most `limit` of them)."""

    STORAGE_SCHEME = None  # made directly, never from a URL

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._clock = clock
        self.events: dict[str, list[float]] = {}
        self.timer: asyncio.Task[None] | None = None  # the sweep running or last run
        self._next_sweep = -math.inf

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError  # nothing here raises for a storage reason

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """limits' rule: refused when the entry `amount` places before the limit is still inside the window."""
        if amount > limit:
            return False
        now = self._clock()
        self._schedule_sweep(now)
        events = self.events.get(key)
        if events is None:
            events = self.events[key] = []
        if len(events) > limit - amount and events[limit - amount] >= now:
            return False
        events[:0] = [now + expiry] * amount
        del events[limit:]  # older entries can no longer decide anything (limits' Redis script trims alike)
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(when the oldest entry still in the window was counted, how many are in it)."""
        now = self._clock()
        events = self.events.get(key)
        count = bisect.bisect_right(events, -now, key=_newest_first) if events else 0
        if events and count:
            return events[count - 1] - expiry, count
        return now, 0

    def _schedule_sweep(self, now: float) -> None:
        if now >= self._next_sweep and (self.timer is None or self.timer.done()):
            self._next_sweep = now + SWEEP_INTERVAL
            self.timer = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        for done, key in enumerate(list(self.events), start=1):
            events = self.events.get(key)
            if events:  # newest first: cut at the first entry that has expired
                del events[bisect.bisect_right(events, -self._clock(), key=_newest_first) :]
            if not events:
                self.events.pop(key, None)
            if done % _SWEEP_STEP == 0:
                await asyncio.sleep(0)

    # The rest of limits' storage interface: the fixed-window counters, which the moving window never uses.
    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError("a moving-window storage only")

    async def get(self, key: str) -> int:
        raise NotImplementedError("a moving-window storage only")

    async def get_expiry(self, key: str) -> float:
        raise NotImplementedError("a moving-window storage only")

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        count = len(self.events)
        self.events.clear()
        return count

    async def clear(self, key: str) -> None:
        self.events.pop(key, None)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
