"""Rate limits per caller: the moving window, whose budget a request spends, what is never counted, and the bound on
memory. The limiter runs on limits' moving-window strategy over our in-process storage (memory_store.py), whose
clock is a FakeClock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from sidecar.edge.decide import Decision
from sidecar.policy.model import AllowRule, Identity, Match, Mode, RateKey, RateLimit, Route
from sidecar.ratelimit.limiter import RateCheck, RateLimiter, caller_key
from sidecar.ratelimit.memory_store import SWEEP_INTERVAL, ProcessStorage
from sidecar.reasons import Reason
from tests.support.jwtkit import FakeClock

THREE_A_MINUTE = RateLimit(RateKey.SUBJECT, requests=3, window=60)


def route(limit: RateLimit = THREE_A_MINUTE, name: str = "flow", mode: Mode = Mode.ENFORCE) -> Route:
    return Route(name, Match(path=f"/{name}"), "https://up.test/", (AllowRule("p"),), mode=mode, rate_limit=limit)


def identity(**claims: object) -> Identity:
    return Identity(provider="p", claims=claims, expires_at=0.0)


def other_provider(**claims: object) -> Identity:
    return Identity(provider="q", claims=claims, expires_at=0.0)


def allowed(on: Route, who: Identity | None = None) -> Decision:
    return Decision(path="/flow", route=on, identity=who or identity(sub="lisa"), mode=on.mode)


@pytest.fixture()
def clock() -> FakeClock:
    return FakeClock(1_700_000_000.0)


@pytest.fixture()
def storage(clock: FakeClock) -> Iterator[ProcessStorage]:
    storage = ProcessStorage(clock)
    yield storage
    if storage.timer is not None:
        storage.timer.cancel()


@pytest.fixture()
def limiter(storage: ProcessStorage, clock: FakeClock) -> RateLimiter:
    return RateLimiter(storage, clock=clock)


async def forgotten(storage: ProcessStorage) -> None:
    """Wait for the expiry sweep (a task a hit starts) to finish: then expired callers are gone."""
    for _ in range(3):  # bounded: a sweep started before the clock moved, then the one the last hit started
        if storage.timer is not None:
            await storage.timer


async def test_a_caller_gets_its_requests_then_waits_until_the_oldest_leaves_the_window(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    flow = route()
    waits = []
    for _ in range(4):
        waits.append(await limiter.hit(flow, "subject:lisa"))
        clock.now += 10
    assert waits[:3] == [None, None, None]
    assert waits[3] == pytest.approx(30.0)  # the first request (t=0) leaves the 60 s window at t=60; now t=30
    clock.now += 21  # t=61
    assert await limiter.hit(flow, "subject:lisa") is None


async def test_budgets_are_per_caller_and_per_route(limiter: RateLimiter) -> None:
    flow, other = route(), route(name="other")
    for _ in range(3):
        assert await limiter.hit(flow, "subject:lisa") is None
    assert await limiter.hit(flow, "subject:lisa") is not None
    assert await limiter.hit(flow, "subject:tom") is None
    assert await limiter.hit(other, "subject:lisa") is None


async def test_a_changed_limit_counts_afresh(limiter: RateLimiter) -> None:
    """A reload that changes a route's rate_limit starts its counts again; the old counts simply expire."""
    for _ in range(3):
        assert await limiter.hit(route(), "subject:lisa") is None
    assert await limiter.hit(route(), "subject:lisa") is not None
    assert await limiter.hit(route(RateLimit(RateKey.SUBJECT, 5, 60)), "subject:lisa") is None


KEYS = {
    "subject-is-oid": (RateKey.SUBJECT, identity(oid="o-1", sub="s-1"), None, "subject:p:o-1"),
    "subject-is-sub-without-oid": (RateKey.SUBJECT, identity(sub="s-1"), None, "subject:p:s-1"),
    "subject-is-the-providers": (RateKey.SUBJECT, other_provider(sub="s-1"), None, "subject:q:s-1"),
    "app-is-azp": (RateKey.APP, identity(sub="s", azp="client-v2"), None, "app:p:client-v2"),
    "app-is-appid": (RateKey.APP, identity(sub="s", appid="client-v1"), None, "app:p:client-v1"),
    "app-is-client_id": (RateKey.APP, identity(sub="s", client_id="client-9068"), None, "app:p:client-9068"),
    "app-is-the-providers": (RateKey.APP, other_provider(client_id="client-9068"), None, "app:q:client-9068"),
    "no-app-claim-shares-one-budget-per-provider": (RateKey.APP, identity(sub="s"), None, "app:p:-"),
    "ip-is-the-client-address": (RateKey.IP, identity(sub="s"), "203.0.113.7", "ip:203.0.113.7"),
    "ipv6-is-the-clients-64": (RateKey.IP, None, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "ip:2001:db8:1:2::/64"),
    "ipv4-mapped-is-ipv4": (RateKey.IP, None, "::ffff:203.0.113.7", "ip:203.0.113.7"),
    "no-address-shares-one-budget": (RateKey.IP, None, None, "ip:-"),
}


@pytest.mark.parametrize(("per", "who", "ip", "key"), KEYS.values(), ids=KEYS.keys())
def test_whose_budget_a_request_spends(per: RateKey, who: Identity | None, ip: str | None, key: str) -> None:
    limit = RateLimit(per, 1, 1)
    decision = Decision(path="/x", route=route(limit), identity=who)
    assert caller_key(limit, decision, ip) == key


IPV6_CALLERS = {
    "one-64-is-one-caller": (64, "2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", True),
    "another-64-is-another": (64, "2001:db8:1:2::1", "2001:db8:1:3::1", False),
    "a-56-takes-its-64s": (56, "2001:db8:1:200::1", "2001:db8:1:2ff::1", True),
    "outside-the-56": (56, "2001:db8:1:200::1", "2001:db8:1:300::1", False),
    "a-128-is-per-address": (128, "2001:db8::1", "2001:db8::2", False),
    "ipv4-is-always-per-address": (32, "203.0.113.7", "203.0.113.8", False),
    "ipv4-and-its-mapped-spelling": (64, "203.0.113.7", "::ffff:203.0.113.7", True),
}


@pytest.mark.parametrize(("prefix", "one", "two", "shared"), IPV6_CALLERS.values(), ids=IPV6_CALLERS.keys())
async def test_ipv6_addresses_in_one_prefix_share_a_budget(
    limiter: RateLimiter, prefix: int, one: str, two: str, shared: bool
) -> None:
    flow = route(RateLimit(RateKey.IP, 1, 60, ipv6_prefix=prefix))
    first = await limiter.admit(allowed(flow), one)
    second = await limiter.admit(allowed(flow), two)
    assert first.reason is None
    assert second.reason is (Reason.RATE_LIMITED if shared else None)


async def test_the_same_subject_of_two_providers_has_two_budgets(limiter: RateLimiter) -> None:
    flow = route(RateLimit(RateKey.SUBJECT, 1, 60))
    lisa, namesake = allowed(flow, identity(sub="lisa")), allowed(flow, other_provider(sub="lisa"))
    lisa_again = allowed(flow, identity(sub="lisa"))
    checks = [await limiter.admit(decision, None) for decision in (lisa, namesake, lisa_again)]
    assert [check.reason for check in checks] == [None, None, Reason.RATE_LIMITED]


REFUSED = [Reason.MISSING_TOKEN, Reason.BAD_SIGNATURE, Reason.NOT_ALLOWED, Reason.EXPIRED]


@pytest.mark.parametrize("reason", REFUSED, ids=[reason.value for reason in REFUSED])
async def test_refused_requests_never_spend_a_budget(limiter: RateLimiter, reason: Reason) -> None:
    flow = route(RateLimit(RateKey.IP, 3, 60))
    for _ in range(50):  # a flood of bad requests from one address
        refused = Decision(path="/flow", route=flow, reason=reason)
        check = await limiter.admit(refused, "203.0.113.7")
        assert check.reason is None and check.retry_after is None  # not counted, and no second reason
    for _ in range(3):  # the good caller behind the same address still has its whole budget
        check = await limiter.admit(allowed(flow), "203.0.113.7")
        assert check.reason is None
    assert limiter.callers == 1


MODES = {"enforce-refuses": (Mode.ENFORCE, False), "audit-counts-and-forwards": (Mode.AUDIT, True)}


@pytest.mark.parametrize(("mode", "forwarded"), MODES.values(), ids=MODES.keys())
async def test_over_the_budget_is_rate_limited_with_whole_seconds_to_wait(
    limiter: RateLimiter, clock: FakeClock, mode: Mode, forwarded: bool
) -> None:
    flow = route(mode=mode)
    for _ in range(3):
        await limiter.admit(allowed(flow), None)
    clock.now += 29.2
    decision = allowed(flow)
    check = await limiter.admit(decision, None)
    assert check.reason is Reason.RATE_LIMITED
    assert check.retry_after == 31  # 30.8 s until the first request leaves the window, rounded up
    assert replace(decision, reason=check.reason).forwarded is forwarded
    assert check == RateCheck(Reason.RATE_LIMITED, 31, None)  # and the store did not fail


async def test_retry_after_is_never_zero(limiter: RateLimiter, clock: FakeClock) -> None:
    flow = route()
    for _ in range(3):
        await limiter.admit(allowed(flow), None)
    clock.now += 60  # the oldest request is exactly one window old: it still counts
    check = await limiter.admit(allowed(flow), None)
    assert (check.reason, check.retry_after) == (Reason.RATE_LIMITED, 1)


async def test_many_callers_are_forgotten_one_window_after_their_last_request(
    limiter: RateLimiter, storage: ProcessStorage, clock: FakeClock
) -> None:
    flow = route(RateLimit(RateKey.IP, 3, 60))
    for n in range(5_000):
        assert await limiter.hit(flow, f"ip:10.0.{n // 250}.{n % 250}") is None
    assert limiter.callers == 5_000
    await forgotten(storage)
    clock.now += 61
    assert await limiter.hit(flow, "ip:192.0.2.1") is None  # this hit starts the sweep
    await forgotten(storage)
    assert limiter.callers == 1  # only the caller that just came


async def test_the_expiry_sweep_starts_at_most_once_per_interval(
    limiter: RateLimiter, storage: ProcessStorage, clock: FakeClock
) -> None:
    """limits' MemoryStorage starts a sweep after every hit; ours starts one at most once per SWEEP_INTERVAL."""
    flow = route()
    await limiter.hit(flow, "subject:a")
    first = storage.timer
    assert first is not None
    await first
    await limiter.hit(flow, "subject:b")
    assert storage.timer is first
    clock.now += SWEEP_INTERVAL
    await limiter.hit(flow, "subject:c")
    assert storage.timer is not first


async def test_beyond_max_keys_new_callers_wait_and_known_ones_go_on(storage: ProcessStorage, clock: FakeClock) -> None:
    limiter = RateLimiter(storage, max_keys=100, clock=clock)
    flow = route(RateLimit(RateKey.IP, 3, 60))
    for n in range(100):
        assert await limiter.hit(flow, f"ip:10.0.0.{n}") is None
    assert await limiter.hit(flow, "ip:192.0.2.1") == 60.0  # full: the newcomer waits a window
    assert await limiter.hit(flow, "ip:10.0.0.7") is None  # a known caller still spends its own budget
    assert limiter.callers == 100
    await forgotten(storage)
    clock.now += 61
    await limiter.hit(flow, "ip:10.0.0.7")  # starts the sweep that forgets the others
    await forgotten(storage)
    assert await limiter.hit(flow, "ip:192.0.2.1") is None
