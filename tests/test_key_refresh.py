"""Key rotation without dropped calls: the scheduled refresh (Cache-Control within bounds, jitter, backoff), stale
keys within max_stale, refusal beyond it, and what the metrics and logs say about it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from sidecar.auth import keys as keys_module
from sidecar.auth.keys import KeySetStatus, KeyStore
from sidecar.observe.metrics import Metrics
from sidecar.policy.model import Introspection, Provider
from sidecar.reasons import Reason, Rejection
from tests.support.jwtkit import FakeClock, FakeIssuer, jwks, rsa_key
from tests.support.logs import Records, captured

RSA, RSA2 = rsa_key("rsa-1"), rsa_key("rsa-2")
HOUR = 3600.0


class Observer:
    def __init__(self) -> None:
        self.fetched: list[tuple[str, bool]] = []
        self.observed: list[list[KeySetStatus]] = []
        self.seen = asyncio.Event()

    def keys_fetched(self, provider: str, ok: bool) -> None:
        self.fetched.append((provider, ok))

    def keys_observed(self, statuses: Iterable[KeySetStatus]) -> None:
        self.observed.append(list(statuses))
        self.seen.set()


@pytest.fixture
def issuer() -> FakeIssuer:
    return FakeIssuer(RSA)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def observer() -> Observer:
    return Observer()


@pytest.fixture
async def store(issuer: FakeIssuer, clock: FakeClock, observer: Observer) -> AsyncIterator[KeyStore]:
    async with issuer.client() as client:
        yield KeyStore(client, clock, observer=observer, rand=lambda: 0.0)  # no jitter unless a test asks


@pytest.fixture
def logs() -> Iterator[Records]:
    with captured("sidecar.auth.keys") as records:
        yield records


def provider(issuer: FakeIssuer, **overrides: object) -> Provider:
    return issuer.provider(direct=True, **overrides)


# --- when the next scheduled fetch is due ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "interval"),
    [
        (None, HOUR),
        ("max-age=600", 600.0),
        ("public, max-age=86400", HOUR),
        ("private, max-age=10", 300.0),
        ("no-cache", 300.0),
        ("no-store, max-age=900", 300.0),
        ("max-age=abc", HOUR),
        ("s-maxage=600", HOUR),
        ('max-age="1200"', 1200.0),
    ],
    ids=[
        "no-header-uses-max",
        "max-age-within-bounds",
        "max-age-above-max-clamped",
        "max-age-below-min-clamped",
        "no-cache-uses-min",
        "no-store-uses-min",
        "unparseable-uses-max",
        "shared-cache-max-age-ignored",
        "quoted-max-age",
    ],
)
async def test_refresh_interval_honours_cache_control_within_bounds(
    store: KeyStore, issuer: FakeIssuer, cache_control: str | None, interval: float
) -> None:
    if cache_control is not None:
        issuer.jwks_headers = {"cache-control": cache_control}
    main = provider(issuer, jwks_refresh_min=300.0, jwks_refresh_max=HOUR)
    await store.prime([main])
    assert await store.refresh_due([main]) == interval


@pytest.mark.parametrize(
    ("rand", "bounds", "interval"),
    [(1.0, (300.0, HOUR), 0.9 * HOUR), (0.5, (300.0, HOUR), 0.95 * HOUR), (1.0, (HOUR, HOUR), HOUR)],
    ids=["up-to-ten-percent-early", "half-jitter", "never-below-min"],
)
async def test_jitter_only_brings_the_refresh_forward(
    issuer: FakeIssuer, clock: FakeClock, rand: float, bounds: tuple[float, float], interval: float
) -> None:
    main = provider(issuer, jwks_refresh_min=bounds[0], jwks_refresh_max=bounds[1])
    async with issuer.client() as client:
        store = KeyStore(client, clock, rand=lambda: rand)
        await store.prime([main])
        assert await store.refresh_due([main]) == pytest.approx(interval)


async def test_scheduled_fetch_happens_when_due_and_not_before(
    store: KeyStore, issuer: FakeIssuer, clock: FakeClock
) -> None:
    main = provider(issuer)
    await store.prime([main])
    clock.now += main.jwks_refresh_max - 0.001
    await store.refresh_due([main])
    assert issuer.jwks_requests == 1
    clock.now += 0.001
    assert await store.refresh_due([main]) == 0.0  # fetched: look again
    assert issuer.jwks_requests == 2
    assert await store.refresh_due([main]) == main.jwks_refresh_max


async def test_never_fetched_source_is_due_at_once(store: KeyStore, issuer: FakeIssuer) -> None:
    main = provider(issuer)
    await store.refresh_due([main])  # e.g. a provider added by a reload that nobody primed
    assert store.ready([main]) and issuer.jwks_requests == 1


async def test_providers_sharing_a_source_share_the_scheduled_fetch(
    store: KeyStore, issuer: FakeIssuer, clock: FakeClock
) -> None:
    one, two = provider(issuer, name="one"), provider(issuer, name="two", audiences=frozenset({"other"}))
    await store.prime([one, two])
    clock.now += HOUR
    await store.refresh_due([one, two])
    assert issuer.jwks_requests == 2


async def test_introspection_providers_have_no_keys(store: KeyStore, issuer: FakeIssuer) -> None:
    opaque = Provider("opaque", "", frozenset(), None, introspection=Introspection("https://idp.test/i", "c", "s"))
    await store.prime([opaque])
    assert await store.refresh_due([opaque]) == float("inf")
    assert store.ready([opaque]) and store.status([opaque]) == []
    assert issuer.requests == []


# --- rotation: picked up by the schedule, and the kid-miss allowance is untouched --------------------------------


async def test_scheduled_refresh_picks_up_a_new_key_before_any_token_uses_it(
    store: KeyStore, issuer: FakeIssuer, clock: FakeClock
) -> None:
    main = provider(issuer, jwks_min_refresh=HOUR)
    await store.prime([main])
    await reason_of(store, main, "invented", "RS256")  # spends the kid-miss refetch: none for an hour
    issuer.jwks = jwks(RSA, RSA2)  # the issuer publishes its next key ahead of using it
    clock.now += main.jwks_refresh_max
    await store.refresh_due([main])
    fetched = issuer.jwks_requests
    assert (await store.key(main, "rsa-2", "RS256")).key_id == "rsa-2"
    assert issuer.jwks_requests == fetched  # no fetch was needed: the schedule had it


async def test_scheduled_fetches_do_not_delay_the_first_kid_miss(
    store: KeyStore, issuer: FakeIssuer, clock: FakeClock
) -> None:
    main = provider(issuer, jwks_min_refresh=HOUR)
    await store.prime([main])
    clock.now += main.jwks_refresh_max
    await store.refresh_due([main])
    issuer.jwks = jwks(RSA, RSA2)  # rotated right after the scheduled fetch
    assert (await store.key(main, "rsa-2", "RS256")).key_id == "rsa-2"
    assert issuer.jwks_requests == 3


# --- the issuer goes away: stale keys serve up to max_stale --------------------------------------------------------


async def backoffs(store: KeyStore, main: Provider, clock: FakeClock, count: int) -> list[float]:
    """The waits between `count` failing fetches, each made as soon as it is due."""
    waits = []
    for _ in range(count):
        assert await store.refresh_due([main]) == 0.0  # due: fetched, and failed
        waits.append(await store.refresh_due([main]))
        clock.now += waits[-1]
    return waits


async def test_failed_refresh_retries_with_backoff(store: KeyStore, issuer: FakeIssuer, clock: FakeClock) -> None:
    main = provider(issuer, jwks_refresh_max=20.0, jwks_refresh_min=5.0)
    await store.prime([main])
    issuer.status = 503
    clock.now += await store.refresh_due([main])
    # 1 s, 2 s, ... never longer than jwks_refresh.max: the next good fetch comes no later than a scheduled one.
    assert await backoffs(store, main, clock, 7) == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


async def test_backoff_is_capped_at_thirty_seconds(store: KeyStore, issuer: FakeIssuer, clock: FakeClock) -> None:
    issuer.status = 503
    waits = await backoffs(store, provider(issuer), clock, 8)  # never fetched: the start-up retry schedule
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


async def test_stale_keys_keep_verifying_and_ready_within_max_stale(
    store: KeyStore, issuer: FakeIssuer, clock: FakeClock, observer: Observer, logs: Records
) -> None:
    main = provider(issuer, max_stale=2 * HOUR)
    await store.prime([main])
    issuer.error = httpx.ConnectError("refused")
    clock.now += HOUR
    await store.refresh_due([main])
    assert store.ready([main])  # /readyz stays 200
    assert (await store.key(main, "rsa-1", "RS256")).key_id == "rsa-1"
    assert store.status([main]) == [KeySetStatus(main.name, HOUR, 1, True)]
    assert observer.fetched == [(main.name, True), (main.name, False)]
    assert "signing keys stale: verifying with the last good keys" in logs.messages(logging.WARNING)
    issuer.error = None
    clock.now += await store.refresh_due([main])
    await store.refresh_due([main])
    assert store.status([main]) == [KeySetStatus(main.name, 0.0, 1, False)]
    assert "signing keys fresh again" in logs.messages()


async def test_keys_older_than_max_stale_are_not_used(
    store: KeyStore, issuer: FakeIssuer, clock: FakeClock, logs: Records
) -> None:
    main = provider(issuer, max_stale=2 * HOUR)
    await store.prime([main])
    issuer.status = 500
    clock.now += 2 * HOUR + 1
    await store.refresh_due([main])
    assert not store.ready([main])  # /readyz 503: this sidecar cannot verify any more
    assert await reason_of(store, main, "rsa-1", "RS256") is Reason.KEYS_UNAVAILABLE
    errors = logs.messages(logging.ERROR)
    assert errors == ["signing keys older than max_stale: tokens refused (503) until a fetch succeeds"]
    issuer.status = 200
    clock.now += main.jwks_min_refresh
    assert (await store.key(main, "rsa-1", "RS256")).key_id == "rsa-1"  # the issuer is back: so are the keys
    assert store.ready([main])


async def test_repeated_failures_are_logged_at_doubling_intervals(
    store: KeyStore, issuer: FakeIssuer, clock: FakeClock, logs: Records
) -> None:
    main = provider(issuer)
    await store.prime([main])
    issuer.status = 500
    clock.now += HOUR
    for _ in range(9):
        await store.refresh_due([main])
        clock.now += 60
    warnings = [r for r in logs.records if r.levelno == logging.WARNING]
    assert [getattr(r, "fields", {})["failures"] for r in warnings] == [1, 2, 4, 8]


async def test_changed_key_set_is_logged_with_the_kids(
    store: KeyStore, issuer: FakeIssuer, clock: FakeClock, logs: Records
) -> None:
    main = provider(issuer)
    await store.prime([main])
    issuer.jwks = jwks(RSA2)
    clock.now += HOUR
    await store.refresh_due([main])
    fetched = [getattr(r, "fields", {}) for r in logs.records if r.getMessage() == "signing keys fetched"]
    assert fetched[-1] == {"provider": main.name, "keys": 1, "added": ["rsa-2"], "removed": ["rsa-1"]}


# --- the scheduler task and the metrics ----------------------------------------------------------------------------


async def test_run_refresh_fetches_observes_survives_errors_and_stops_when_cancelled(
    store: KeyStore, issuer: FakeIssuer, observer: Observer, monkeypatch: pytest.MonkeyPatch, logs: Records
) -> None:
    monkeypatch.setattr(keys_module, "_RETRY_FIRST", 0.001)
    main = provider(issuer)
    calls: list[int] = []
    asked = asyncio.Event()

    def providers() -> list[Provider]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a policy that cannot be read")
        asked.set()
        return [main]

    task = asyncio.create_task(store.run_refresh(providers))
    await asked.wait()
    await observer.seen.wait()
    assert store.ready([main]) and issuer.jwks_requests == 1
    assert observer.observed[-1] == [KeySetStatus(main.name, 0.0, 1, False)]
    assert "key refresh pass failed; retrying" in logs.messages(logging.ERROR)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_metrics_export_refreshes_age_keys_and_staleness(issuer: FakeIssuer, clock: FakeClock) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    main = provider(issuer, jwks_refresh_min=60.0, jwks_refresh_max=60.0)
    async with issuer.client() as client:
        store = KeyStore(client, clock, observer=metrics)
        await store.prime([main])
        issuer.status = 500
        clock.now += 120
        await store.refresh_due([main])
        metrics.keys_observed(store.status([main]))

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"provider": main.name, **labels})

    assert sample("sidecar_jwks_refresh_total", result="success") == 1
    assert sample("sidecar_jwks_refresh_total", result="error") == 1
    assert sample("sidecar_jwks_age_seconds") == 120
    assert sample("sidecar_jwks_keys") == 1
    assert sample("sidecar_jwks_stale") == 1


async def reason_of(store: KeyStore, main: Provider, kid: str, alg: str) -> Reason:
    with pytest.raises(Rejection) as caught:
        await store.key(main, kid, alg)
    return caught.value.reason
