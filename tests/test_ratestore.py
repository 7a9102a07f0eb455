"""The in-process storage counts as limits' own MemoryStorage does: the same answers to the same hits at the same
times (the moving-window rule), on limits' public storage interface; its window holds the requests counted at most
`window` seconds ago (an entry exactly one window old still counts, as in limits' Redis script and its acquire rule;
limits' MemoryStorage leaves that one out of its window statistics); and it forgets callers whose window has passed."""

from __future__ import annotations

import random
from types import SimpleNamespace

import limits.aio.storage.memory as limits_memory
import pytest
from limits.aio.storage import MemoryStorage

from sidecar.ratelimit.memory_store import ProcessStorage
from tests.support.jwtkit import FakeClock

LIMITS = {"a": (1, 5), "b": (3, 10), "c": (5, 10), "d": (3, 5)}


@pytest.mark.parametrize("seed", range(5))
async def test_same_answers_as_limits_memory_storage(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(1_700_000_000.0)
    monkeypatch.setattr(limits_memory, "time", SimpleNamespace(time=clock))
    ours, theirs = ProcessStorage(clock), MemoryStorage()
    rng = random.Random(seed)
    stamps: dict[str, list[float]] = {}  # when each counted request came, oldest first
    try:
        for _ in range(2_000):
            clock.now += rng.choice((0.0, 0.25, 1.0, 3.0, 7.5, 10.0))  # repeats land exactly on a window's edge
            key, (limit, expiry) = rng.choice(list(LIMITS.items()))  # a key is one route's limit and caller
            amount = rng.choice((1, 1, 1, 2))
            acquired = await ours.acquire_entry(key, limit, expiry, amount)
            assert acquired == await theirs.acquire_entry(key, limit, expiry, amount)
            stamps.setdefault(key, []).extend([clock.now] * amount if acquired else [])
            counted = [t for t in reversed(stamps.setdefault(key, [])) if t >= clock.now - expiry][:limit]
            assert await ours.get_moving_window(key, limit, expiry) == (
                (counted[-1], len(counted)) if counted else (clock.now, 0)
            )
    finally:
        ours.close()
        if theirs.timer is not None:
            theirs.timer.cancel()


async def test_a_key_is_forgotten_once_its_window_has_passed() -> None:
    clock = FakeClock(1_000.0)
    storage = ProcessStorage(clock)
    assert await storage.acquire_entry("gone", 3, 10)
    clock.now += 10
    assert await storage.get_moving_window("gone", 3, 10) == (1_000.0, 1)  # exactly one window old: still counts
    clock.now += 0.5
    assert await storage.get_moving_window("gone", 3, 10) == (clock.now, 0)
    assert await storage.acquire_entry("new", 3, 10)  # starts a sweep
    assert storage.timer is not None
    await storage.timer
    assert set(storage.events) == {"new"}
    storage.close()
