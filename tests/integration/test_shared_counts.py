"""The shared counts against a real Redis, in process: two limiters (two workers, or two replicas) share one budget,
Retry-After comes from the window, prefixes keep deployments apart, a failure is classified, observed once per change
and followed by a rest during which the store is not asked, and on_error decides what the request gets."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions
import trustme
from limits import RateLimitItemPerSecond

from sidecar.edge.decide import Decision
from sidecar.policy.load import parse_policy
from sidecar.policy.model import AllowRule, Identity, Match, RateKey, RateLimit, RateLimitStore, Route, StoreFailure
from sidecar.ratelimit.limiter import RateLimiter, StoreUnavailable
from sidecar.ratelimit.redis_store import RETRY_INTERVAL, SharedCounts, classify
from sidecar.reasons import Reason
from tests.support.jwtkit import FakeClock
from tests.support.redis import RedisServer, SentinelServer
from tests.support.servers import free_closed_port

FLOW = Route(
    "flow", Match(path="/flow"), "https://up.test/", (AllowRule("p"),), rate_limit=RateLimit(RateKey.SUBJECT, 3, 60)
)


ROUTE = "{name: a, match: {path: /a}, upstream: 'http://127.0.0.1:9/', allow: anyone}"


class Observer:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def store_failed(self, error: str) -> None:
        self.seen.append(error)

    def store_answered(self) -> None:
        self.seen.append("up")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture()
def observer() -> Observer:
    return Observer()


@pytest.fixture()
async def limiters(redis_url: str, observer: Observer, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    made: list[RateLimiter] = []

    def make(url: str = redis_url, on_error: StoreFailure = StoreFailure.DENY, prefix: str = "") -> RateLimiter:
        # No test here waits for the store's timeout: the longest one (5 s) keeps a busy machine (the suites run side
        # by side) from reading a slow answer, or a slow refused TLS handshake, as a timeout.
        store = RateLimitStore(url, 5.0, on_error, prefix=prefix or request.node.name[:60].replace("[", "."))
        made.append(RateLimiter(store=store, observer=observer))
        return made[-1]

    yield make
    for limiter in made:
        await limiter.close()


async def test_two_limiters_share_one_budget_and_retry_after_is_the_window(limiters: Any) -> None:
    one, two = limiters(), limiters()
    waits = [await (one if n % 2 else two).hit(FLOW, "subject:p:lisa") for n in range(5)]
    assert waits[:3] == [None, None, None]
    assert all(wait is not None and 59 <= wait <= 60 for wait in waits[3:])


async def test_a_prefix_keeps_deployments_apart(limiters: Any) -> None:
    payments, billing = limiters(prefix="payments"), limiters(prefix="billing")
    for _ in range(3):
        assert await payments.hit(FLOW, "subject:p:lisa") is None
    assert await payments.hit(FLOW, "subject:p:lisa") is not None
    assert await billing.hit(FLOW, "subject:p:lisa") is None


async def test_through_sentinel_the_primary_it_names_counts(
    limiters: Any, redis_server: RedisServer, tmp_path: Any
) -> None:
    sentinel = SentinelServer(tmp_path, redis_server.port).start()
    try:
        through_sentinel, direct = limiters(sentinel.url, prefix="sentinel"), limiters(prefix="sentinel")
        for _ in range(3):
            assert await through_sentinel.hit(FLOW, "subject:p:sam") is None
        assert await direct.hit(FLOW, "subject:p:sam") is not None  # the same budget, on the same primary
    finally:
        sentinel.stop()


@pytest.fixture()
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    """A Redis that speaks TLS only, with a certificate for localhost from a throwaway CA; and that CA's file."""
    ca = trustme.CA()
    issued = ca.issue_cert("localhost")
    chain, key, ca_file = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    ca.cert_pem.write_to_path(str(ca_file))
    server = RedisServer(tmp_path, tls=(chain, key)).start()
    yield server, ca_file
    server.stop()


async def test_rediss_counts_over_tls_and_verifies_the_server(
    limiters: Any, observer: Observer, tls_redis: tuple[RedisServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca_file = tls_redis
    with pytest.raises(StoreUnavailable) as untrusted:  # the system's CAs do not know this one: no connection
        await limiters(server.url).hit(FLOW, "subject:p:tls")
    assert untrusted.value.error == "unreachable"
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # the CA the client trusts (OpenSSL's default locations)
    trusted = limiters(server.url)
    for _ in range(3):
        assert await trusted.hit(FLOW, "subject:p:tls") is None
    assert await trusted.hit(FLOW, "subject:p:tls") is not None


async def test_rediss_builds_its_ssl_context_once_before_the_first_request(
    observer: Observer, tls_redis: tuple[RedisServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py builds an SSL context (the CA bundle read: 100-250 ms on the event loop) for every connection it
    opens; the store's connections share one, built by the first check (in a thread), so no request builds one."""
    server, ca_file = tls_redis
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    counts = SharedCounts(RateLimitStore(server.url, 2.0, StoreFailure.DENY, prefix="ssl-once"), observer)
    try:
        assert await counts.check()
        built: list[object] = []
        real = ssl.create_default_context

        def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
            built.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(ssl, "create_default_context", counted)
        item = RateLimitItemPerSecond(100, 60)
        answers = await asyncio.gather(*(counts.hit(item, "flow", f"k{n}") for n in range(4)))  # several connections
        assert answers == [None] * 4
        assert built == []
        assert observer.seen == ["up"]
    finally:
        await counts.close()


async def test_check_follows_the_store_and_ends_the_rest(tmp_path: Path, observer: Observer) -> None:
    """The background check: a store down reads failed (and is rested), the same store back reads up at the next
    check, and a request is asked of it at once (not after the rest)."""
    clock = FakeClock(100.0)
    port = free_closed_port()
    counts = SharedCounts(RateLimitStore(f"redis://127.0.0.1:{port}/0", 0.5, StoreFailure.DENY), observer, clock)
    server = RedisServer(tmp_path, port=port)
    try:
        assert not await counts.check()
        server.start()
        assert await counts.check()
        assert await counts.hit(RateLimitItemPerSecond(3, 60), "flow", "k") is None  # clock unchanged: no rest left
        assert observer.seen == ["unreachable", "up"]
    finally:
        await counts.close()
        server.stop()


async def test_the_password_key_wins_over_the_urls(tmp_path: Path, observer: Observer) -> None:
    """`password:` and a password in the URL both given (`check` warns): `password:` is used (as limits does
    through Sentinel), not redis-py's choice of the URL's."""
    server = RedisServer(tmp_path, "the-right-one").start()
    url = f"redis://:a-stale-one@127.0.0.1:{server.port}/0"
    counts = SharedCounts(RateLimitStore(url, 0.5, StoreFailure.DENY, "the-right-one", "pw-wins"), observer)
    try:
        assert await counts.hit(RateLimitItemPerSecond(3, 60), "flow", "k") is None
        assert observer.seen == ["up"]
    finally:
        await counts.close()
        server.stop()


def allowed() -> Decision:
    return Decision(path="/flow", route=FLOW, identity=Identity("p", {"sub": "lisa"}, 0.0))


ON_ERROR = {
    "allow-forwards-uncounted": (StoreFailure.ALLOW, None, None),
    "deny-is-503-with-retry-after": (StoreFailure.DENY, Reason.RATE_LIMIT_UNAVAILABLE, 1),
}


@pytest.mark.parametrize(("on_error", "reason", "retry_after"), ON_ERROR.values(), ids=ON_ERROR.keys())
async def test_on_error_decides_when_the_store_is_unreachable(
    limiters: Any, observer: Observer, on_error: StoreFailure, reason: Reason | None, retry_after: int | None
) -> None:
    limiter = limiters(f"redis://127.0.0.1:{free_closed_port()}/0", on_error)
    check = await limiter.admit(allowed(), None)
    assert (check.reason, check.retry_after) == (reason, retry_after)
    assert check.store_error == "unreachable"  # the access line's ratelimit_store
    assert observer.seen == ["unreachable"]


async def test_a_failed_store_rests_then_is_asked_again(redis_url: str, observer: Observer) -> None:
    clock = FakeClock(100.0)
    dead = RateLimitStore(f"redis://127.0.0.1:{free_closed_port()}/0", 0.5, StoreFailure.DENY)
    counts = SharedCounts(dead, observer, clock)
    item = RateLimitItemPerSecond(3, 60)
    try:
        with pytest.raises(StoreUnavailable) as first:
            await counts.hit(item, "flow", "k")
        clock.now += RETRY_INTERVAL / 2
        with pytest.raises(StoreUnavailable) as resting:
            await counts.hit(item, "flow", "k")
        assert (first.value.error, resting.value.error, observer.seen) == ("unreachable", "resting", ["unreachable"])
        clock.now += RETRY_INTERVAL
        with pytest.raises(StoreUnavailable):
            await counts.hit(item, "flow", "k")
        assert observer.seen == ["unreachable", "unreachable"]  # asked again after the rest
    finally:
        await counts.close()


async def test_over_the_budget_stays_refused_when_retry_after_cannot_be_read(
    redis_url: str, observer: Observer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second call (the window's start, for Retry-After) failing after Redis refused the hit must not turn the
    refusal into on_error's allow: the request waits a whole window. A fault injected between the two calls (a
    real server cannot be made to fail exactly there)."""
    counts = SharedCounts(RateLimitStore(redis_url, 0.5, StoreFailure.ALLOW, prefix="stats-fail"), observer)
    item = RateLimitItemPerSecond(1, 60)
    try:
        assert await counts.hit(item, "flow", "k") is None

        async def fails(*_: object) -> None:
            raise redis.exceptions.TimeoutError()

        monkeypatch.setattr(counts._strategy, "get_window_stats", fails)
        assert await counts.hit(item, "flow", "k") == 60.0
        assert observer.seen == ["up", "timeout"]
    finally:
        await counts.close()


async def test_the_observer_hears_of_changes_only(limiters: Any, observer: Observer) -> None:
    limiter = limiters()
    for _ in range(5):
        await limiter.hit(FLOW, "subject:p:tom")
    assert observer.seen == ["up"]


async def test_use_swaps_the_store_and_hands_back_the_old_one(
    limiters: Any, redis_url: str, observer: Observer
) -> None:
    limiter = limiters()
    prefix = "test_use_swaps_the_store_and_hands_back_the_old_one"
    same = RateLimitStore(redis_url, 5.0, StoreFailure.DENY, prefix=prefix)  # what limiters() made
    assert limiter.use(same) is None  # unchanged: the connections stay
    replaced = limiter.use(None)
    assert replaced is not None
    assert observer.seen[-1:] == ["up"]  # without a store the health gauge reads 1 again
    await replaced.close()
    for _ in range(3):
        assert await limiter.hit(FLOW, "subject:p:ann") is None  # counted in this process now
    assert limiter.callers == 1


ACCEPTED = [
    "redis://redis:6379",
    "redis://redis:6379/15",
    "rediss://sidecar:s3cret@redis.example.com:6380/0",
    "redis://[::1]:6379/0",
    "redis+sentinel://s1:26379,s2:26379/mymaster",
    "redis+sentinel://:pw@s1:26379/mymaster",
]


@pytest.mark.parametrize("url", ACCEPTED)
async def test_every_url_the_policy_accepts_makes_a_store(url: str, observer: Observer) -> None:
    """Checked at load, so that a store is never first found unusable by a request (made without any I/O)."""
    policy = parse_policy(f"version: 1\nroutes: [{ROUTE}]\nrate_limit_store: {{url: '{url}'}}\n", "p.yaml", {})
    assert policy.rate_limit_store is not None
    await SharedCounts(policy.rate_limit_store, observer).close()


CLASSIFIED = {
    "asyncio-timeout": (TimeoutError(), "timeout"),
    "socket-timeout": (redis.exceptions.TimeoutError(), "timeout"),
    "wrong-password": (redis.exceptions.AuthenticationError(), "auth"),
    "acl-refuses-a-command": (redis.exceptions.NoPermissionError(), "auth"),
    "refused-connection": (redis.exceptions.ConnectionError(), "unreachable"),
    "os-error": (ConnectionRefusedError(), "unreachable"),
    "out-of-memory": (redis.exceptions.OutOfMemoryError(), "error"),
    "read-only-replica": (redis.exceptions.ReadOnlyError(), "error"),
}


@pytest.mark.parametrize(("exc", "label"), CLASSIFIED.values(), ids=CLASSIFIED.keys())
def test_each_failure_has_its_label(exc: BaseException, label: str) -> None:
    assert classify(exc) == label


def test_labels_are_the_metrics() -> None:
    from sidecar.observe.metrics import STORE_ERRORS

    assert {label for _, label in CLASSIFIED.values()} == set(STORE_ERRORS)
