"""KeyStore: discovery, the https rule, dropped keys, stale keys on failure, the rate-limited single-flight refetch."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sidecar.auth import keys as keys_module
from sidecar.auth.issuer_http import MAX_DOCUMENT_BYTES as MAX_JWKS_BYTES
from sidecar.auth.jwks import MAX_JWKS_KEYS
from sidecar.auth.keys import KeyStore
from sidecar.policy.model import Provider
from sidecar.reasons import Reason, Rejection
from tests.support.jwtkit import ISSUER, FakeClock, FakeIssuer, ec_key, ed_key, jwks, rsa_key

RSA = rsa_key("rsa-1")
RSA2 = rsa_key("rsa-2")
EC = ec_key("ec-1")


@pytest.fixture
def issuer() -> FakeIssuer:
    return FakeIssuer(RSA, EC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(issuer: FakeIssuer) -> AsyncIterator[httpx.AsyncClient]:
    async with issuer.client() as client:
        yield client


@pytest.fixture
def store(client: httpx.AsyncClient, clock: FakeClock) -> KeyStore:
    return KeyStore(client, clock)


async def reason_of(store: KeyStore, provider: Provider, kid: str | None, alg: str) -> Reason:
    with pytest.raises(Rejection) as caught:
        await store.key(provider, kid, alg)
    return caught.value.reason


# --- discovery and the https rule ---------------------------------------------------------------------------------


async def test_discovery_then_jwks(store: KeyStore, issuer: FakeIssuer) -> None:
    provider = issuer.provider()
    await store.prime([provider])
    assert store.ready([provider])
    assert issuer.requests == [issuer.discovery_url, issuer.jwks_uri]
    key = await store.key(provider, "rsa-1", "RS256")
    assert key.key_id == "rsa-1" and key.algorithm_name == "RS256"
    assert store.fetch_count(provider) == 1 and store.last_error(provider) is None


async def test_direct_jwks_uri_skips_discovery(store: KeyStore, issuer: FakeIssuer) -> None:
    provider = issuer.provider(direct=True)
    await store.prime([provider])
    assert issuer.requests == [issuer.jwks_uri]
    assert (await store.key(provider, "ec-1", "ES256")).key_id == "ec-1"


async def test_first_key_use_fetches_without_prime(store: KeyStore, issuer: FakeIssuer) -> None:
    provider = issuer.provider()
    assert not store.ready([provider])
    assert (await store.key(provider, "rsa-1", "RS256")).key_id == "rsa-1"
    assert store.ready([provider]) and store.fetch_count(provider) == 1


@pytest.mark.parametrize(
    "discovery",
    [
        {"issuer": ISSUER + "/", "jwks_uri": "https://issuer.test/keys"},
        {"issuer": "https://evil.test/tenant/v2.0", "jwks_uri": "https://issuer.test/keys"},
        {"jwks_uri": "https://issuer.test/keys"},
    ],
    ids=["trailing-slash", "other-issuer", "no-issuer"],
)
async def test_discovery_issuer_mismatch_refused(store: KeyStore, issuer: FakeIssuer, discovery: Any) -> None:
    issuer.discovery = discovery
    provider = issuer.provider()
    await store.prime([provider])
    assert not store.ready([provider])
    assert "is not the configured issuer" in (store.last_error(provider) or "")
    assert issuer.jwks_requests == 0
    assert await reason_of(store, provider, "rsa-1", "RS256") is Reason.KEYS_UNAVAILABLE


async def test_discovery_without_jwks_uri(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.discovery = {"issuer": ISSUER}
    provider = issuer.provider()
    await store.prime([provider])
    assert "no jwks_uri" in (store.last_error(provider) or "")


@pytest.mark.parametrize(
    ("issuer_url", "allowed"),
    [
        ("https://issuer.test/t", True),
        ("http://127.0.0.1:9000/t", True),
        ("http://127.9.9.9/t", True),
        ("http://[::1]:9000/t", True),
        ("http://localhost:9000/t", True),
        ("http://issuer.test/t", False),
        ("http://10.0.0.1/t", False),
        ("http://localhost.evil.test/t", False),
        ("ftp://issuer.test/t", False),
        ("http:///t", False),
    ],
    ids=[
        "https",
        "loopback-v4",
        "loopback-v4-range",
        "loopback-v6",
        "localhost",
        "http",
        "http-private-ip",
        "localhost-prefix",
        "ftp",
        "no-host",
    ],
)
async def test_https_rule(issuer_url: str, allowed: bool, clock: FakeClock) -> None:
    issuer = FakeIssuer(RSA, issuer=issuer_url)
    provider = issuer.provider()
    async with issuer.client() as client:
        store = KeyStore(client, clock)
        await store.prime([provider])
    assert store.ready([provider]) is allowed
    if not allowed:
        assert issuer.requests == []  # refused before any request
        assert "https only" in (store.last_error(provider) or "")


async def test_https_rule_applies_to_discovered_jwks_uri(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.discovery = {"issuer": ISSUER, "jwks_uri": "http://issuer.test/keys"}
    provider = issuer.provider()
    await store.prime([provider])
    assert not store.ready([provider])
    assert issuer.jwks_requests == 0
    assert "https only" in (store.last_error(provider) or "")


# --- what a JWKS may hold -----------------------------------------------------------------------------------------


def _oct(kid: str) -> dict[str, Any]:
    return {"kty": "oct", "kid": kid, "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0", "use": "sig"}


@pytest.mark.parametrize(
    ("published", "kid", "alg"),
    [
        (_oct("sym"), "sym", "HS256"),
        (_oct("sym"), "sym", "RS256"),
        (RSA2.jwk(use="enc"), "rsa-2", "RS256"),
        (RSA2.jwk(key_ops=["encrypt"]), "rsa-2", "RS256"),
        (RSA2.jwk(key_ops="verify"), "rsa-2", "RS256"),
        (RSA2.jwk(d="AQAB"), "rsa-2", "RS256"),
        (RSA2.jwk(n=12345), "rsa-2", "RS256"),
        (rsa_key("rsa-2", 1024).jwk(), "rsa-2", "RS256"),
        (RSA2.jwk(kty="XYZ"), "rsa-2", "RS256"),
        (RSA2.jwk(kid=7), "7", "RS256"),
        (RSA2.jwk(alg="RSA-OAEP"), "rsa-2", "RS256"),
        ("not a key", "rsa-2", "RS256"),
    ],
    ids=[
        "oct-hs256",
        "oct-rs256",
        "use-enc",
        "key-ops-encrypt",
        "key-ops-not-list",
        "private-d",
        "broken-modulus",
        "short-rsa-1024",
        "unknown-kty",
        "kid-not-string",
        "enc-alg",
        "not-an-object",
    ],
)
async def test_dropped_keys(store: KeyStore, issuer: FakeIssuer, published: Any, kid: str, alg: str) -> None:
    issuer.jwks = jwks(RSA, published)
    provider = issuer.provider()
    await store.prime([provider])
    assert store.ready([provider])  # the good key still loads
    assert await reason_of(store, provider, kid, alg) is Reason.UNKNOWN_KEY
    # A dropped key does not count: the good one is "the only key" a kid-less token may use.
    assert (await store.key(provider, None, "RS256")).key_id == "rsa-1"


async def test_jwks_of_only_unusable_keys_is_a_failed_fetch(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.jwks = jwks(_oct("a"), RSA.jwk(use="enc"))
    provider = issuer.provider()
    await store.prime([provider])
    assert not store.ready([provider])
    assert "no usable signing keys" in (store.last_error(provider) or "")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"x" * (MAX_JWKS_BYTES + 1), "larger than"),
        (jwks(*[RSA.jwk(kid=f"k{i}") for i in range(MAX_JWKS_KEYS + 1)]), "more than"),
        (b"<html>", "not JSON"),
        (b"[]", "not a JSON object"),
        ({"keys": "nope"}, "no `keys` list"),
        (b"[" * 100_000, "not JSON"),
    ],
    ids=["oversized", "too-many-keys", "not-json", "not-object", "keys-not-list", "deep-nesting"],
)
async def test_bad_jwks_documents(store: KeyStore, issuer: FakeIssuer, body: Any, error: str) -> None:
    issuer.jwks = body
    provider = issuer.provider(direct=True)
    await store.prime([provider])
    assert not store.ready([provider])
    assert error in (store.last_error(provider) or "")


async def test_oversized_by_content_length(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": str(MAX_JWKS_BYTES + 1)}, content=b"{}")

    provider = FakeIssuer(RSA).provider(direct=True)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        store = KeyStore(client, clock)
        await store.prime([provider])
    assert "larger than" in (store.last_error(provider) or "")


async def test_oversized_streamed_without_content_length(clock: FakeClock) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_JWKS_BYTES // 65536 + 1):
            yield b" " * 65536
        raise AssertionError("read past the limit")  # pragma: no cover

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks())

    provider = FakeIssuer(RSA).provider(direct=True)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        store = KeyStore(client, clock)
        await store.prime([provider])
    assert "larger than" in (store.last_error(provider) or "")


@pytest.mark.parametrize("status", [301, 404, 500, 503], ids=["redirect-not-followed", "404", "500", "503"])
async def test_http_errors(store: KeyStore, issuer: FakeIssuer, status: int) -> None:
    issuer.status = status
    provider = issuer.provider(direct=True)
    await store.prime([provider])
    assert store.last_error(provider) == f"JWKS {issuer.jwks_uri}: HTTP {status}"


async def test_error_message_drops_query(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.status = 500
    provider = issuer.provider(jwks_uri=issuer.jwks_uri + "?code=s3cret")
    await store.prime([provider])
    error = store.last_error(provider) or ""
    assert "HTTP 500" in error and "s3cret" not in error


async def test_fetch_timeout(store: KeyStore, issuer: FakeIssuer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys_module, "FETCH_TIMEOUT_SECONDS", 0.01)
    issuer.hold()  # never released: the issuer does not answer
    provider = issuer.provider()
    await store.prime([provider])
    assert "timed out" in (store.last_error(provider) or "")


async def test_unexpected_error_is_recorded_not_raised(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.error = RuntimeError("boom")
    provider = issuer.provider()
    await store.prime([provider])
    assert store.last_error(provider) == "unexpected RuntimeError"


# --- which key fits which algorithm -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "kid", "alg", "fits"),
    [
        (RSA.jwk(), "rsa-1", "RS256", True),
        (RSA.jwk(), "rsa-1", "PS256", True),
        (RSA.jwk(), "rsa-1", "RS512", True),
        (RSA.jwk(alg="RS256"), "rsa-1", "RS256", True),
        (RSA.jwk(alg="RS256"), "rsa-1", "PS256", False),
        (RSA.jwk(alg="RS384"), "rsa-1", "RS256", False),
        (RSA.jwk(use=None), "rsa-1", "RS256", True),
        (RSA.jwk(key_ops=["verify"]), "rsa-1", "RS256", True),
        (RSA.jwk(), "rsa-1", "ES256", False),
        (RSA.jwk(), "rsa-1", "EdDSA", False),
        (EC.jwk(), "ec-1", "ES256", True),
        (EC.jwk(), "ec-1", "RS256", False),
        (EC.jwk(), "ec-1", "ES384", False),
        (ec_key("ec-384", "P-384").jwk(), "ec-384", "ES384", True),
        (ec_key("ec-384", "P-384").jwk(), "ec-384", "ES256", False),
        (ec_key("ec-521", "P-521").jwk(), "ec-521", "ES512", True),
        (ed_key().jwk(), "ed-1", "EdDSA", True),
        (ed_key().jwk(), "ed-1", "RS256", False),
        (RSA.jwk(), "rsa-1", "HS256", False),
    ],
    ids=[
        "rsa-rs256",
        "rsa-ps256",
        "rsa-rs512",
        "rsa-alg-matches",
        "unknown_key-rsa-alg-rs256-token-ps256",
        "unknown_key-rsa-alg-rs384-token-rs256",
        "rsa-no-use",
        "rsa-key-ops-verify",
        "unknown_key-rsa-for-es256",
        "unknown_key-rsa-for-eddsa",
        "ec-es256",
        "unknown_key-ec-for-rs256",
        "unknown_key-p256-for-es384",
        "p384-es384",
        "unknown_key-p384-for-es256",
        "p521-es512",
        "okp-eddsa",
        "unknown_key-okp-for-rs256",
        "unknown_key-hs256",
    ],
)
async def test_key_fits_algorithm(
    store: KeyStore, issuer: FakeIssuer, published: dict[str, Any], kid: str, alg: str, fits: bool
) -> None:
    issuer.jwks = jwks(published, rsa_key("other"))
    provider = issuer.provider()
    if fits:
        key = await store.key(provider, kid, alg)
        assert key.algorithm_name == alg and key.key_id == kid
        assert await store.key(provider, kid, alg) is key  # built once per (key, alg)
    else:
        assert await reason_of(store, provider, kid, alg) is Reason.UNKNOWN_KEY


async def test_duplicate_kid_picks_the_key_that_fits(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.jwks = jwks(RSA.jwk(kid="same"), EC.jwk(kid="same"))
    provider = issuer.provider()
    assert (await store.key(provider, "same", "ES256")).algorithm_name == "ES256"
    assert (await store.key(provider, "same", "RS256")).algorithm_name == "RS256"


async def test_no_kid_uses_the_only_key(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.jwks = jwks(RSA)
    provider = issuer.provider()
    assert (await store.key(provider, None, "RS256")).key_id == "rsa-1"
    assert await reason_of(store, provider, None, "ES256") is Reason.UNKNOWN_KEY


async def test_no_kid_uses_a_kidless_only_key(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.jwks = jwks(RSA.jwk(kid=None))
    provider = issuer.provider()
    assert (await store.key(provider, None, "RS256")).key_id is None


async def test_no_kid_with_two_keys_is_unknown(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.jwks = jwks(RSA, RSA2)  # never try every key: one token, one signature check
    provider = issuer.provider()
    assert await reason_of(store, provider, None, "RS256") is Reason.UNKNOWN_KEY


# --- refresh: stale keys serve, misses are rate-limited and single-flight ------------------------------------------


async def test_keys_unavailable_when_never_fetched(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.error = httpx.ConnectError("refused")
    provider = issuer.provider()
    await store.prime([provider])
    assert not store.ready([provider])
    assert "ConnectError" in (store.last_error(provider) or "")
    assert await reason_of(store, provider, "rsa-1", "RS256") is Reason.KEYS_UNAVAILABLE


async def test_keys_unavailable_recovers(store: KeyStore, issuer: FakeIssuer, clock: FakeClock) -> None:
    issuer.status = 503
    provider = issuer.provider()
    await store.prime([provider])
    assert await reason_of(store, provider, "rsa-1", "RS256") is Reason.KEYS_UNAVAILABLE  # the miss refetched: 503
    issuer.status = 200
    assert await reason_of(store, provider, "rsa-1", "RS256") is Reason.KEYS_UNAVAILABLE  # rate-limited, no fetch
    clock.now += provider.jwks_min_refresh
    assert (await store.key(provider, "rsa-1", "RS256")).key_id == "rsa-1"
    assert store.ready([provider]) and store.last_error(provider) is None


async def test_failed_refresh_keeps_working_keys(store: KeyStore, issuer: FakeIssuer, clock: FakeClock) -> None:
    provider = issuer.provider()
    await store.prime([provider])
    issuer.status = 500
    clock.now += provider.jwks_min_refresh
    assert await reason_of(store, provider, "rotated", "RS256") is Reason.UNKNOWN_KEY
    assert store.fetch_count(provider) == 2 and "HTTP 500" in (store.last_error(provider) or "")
    assert (await store.key(provider, "rsa-1", "RS256")).key_id == "rsa-1"
    assert store.ready([provider])


async def test_successful_refresh_replaces_keys(store: KeyStore, issuer: FakeIssuer, clock: FakeClock) -> None:
    provider = issuer.provider()
    await store.prime([provider])
    issuer.jwks = jwks(RSA2)  # rotation: rsa-1 retired, rsa-2 published
    clock.now += provider.jwks_min_refresh
    assert (await store.key(provider, "rsa-2", "RS256")).key_id == "rsa-2"
    assert await reason_of(store, provider, "rsa-1", "RS256") is Reason.UNKNOWN_KEY


async def test_unknown_kid_refetch_limited_by_clock(store: KeyStore, issuer: FakeIssuer, clock: FakeClock) -> None:
    provider = issuer.provider(direct=True)
    await store.prime([provider])
    assert issuer.jwks_requests == 1
    for _ in range(10_000):  # a key flood: one refetch, then random kids cost nothing upstream within the interval
        assert await reason_of(store, provider, secrets.token_hex(8), "RS256") is Reason.UNKNOWN_KEY
    assert issuer.jwks_requests == 2
    clock.now += provider.jwks_min_refresh - 0.001
    assert await reason_of(store, provider, "x", "RS256") is Reason.UNKNOWN_KEY
    assert issuer.jwks_requests == 2
    clock.now += 0.001
    for _ in range(1_000):
        assert await reason_of(store, provider, secrets.token_hex(8), "RS256") is Reason.UNKNOWN_KEY
    assert issuer.jwks_requests == 3 and store.fetch_count(provider) == 3


async def test_rotation_right_after_start_up_is_followed(store: KeyStore, issuer: FakeIssuer) -> None:
    """Start-up fetches do not count against the refetch limit: the first unknown kid refetches at once."""
    provider = issuer.provider(direct=True)
    await store.prime([provider])
    issuer.jwks = jwks(RSA, RSA2)
    assert (await store.key(provider, "rsa-2", "RS256")).key_id == "rsa-2"
    assert issuer.jwks_requests == 2


async def test_concurrent_misses_share_one_fetch(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.hold()  # keep the fetch in flight while all 100 arrive
    provider = issuer.provider(direct=True)
    tasks = [asyncio.create_task(store.key(provider, secrets.token_hex(8), "RS256")) for _ in range(100)]
    await issuer.entered.wait()  # every task ran (FIFO) before the fetch reached the issuer
    issuer.release()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Rejection) and r.reason is Reason.UNKNOWN_KEY for r in results)
    assert issuer.jwks_requests == 1


async def test_concurrent_new_kid_after_rotation(store: KeyStore, issuer: FakeIssuer, clock: FakeClock) -> None:
    provider = issuer.provider(direct=True)
    await store.prime([provider])
    issuer.jwks = jwks(RSA, RSA2)
    issuer.entered.clear()
    issuer.hold()
    clock.now += provider.jwks_min_refresh
    tasks = [asyncio.create_task(store.key(provider, "rsa-2", "RS256")) for _ in range(100)]
    await issuer.entered.wait()
    issuer.release()
    found = await asyncio.gather(*tasks)
    assert {key.key_id for key in found} == {"rsa-2"}
    assert issuer.jwks_requests == 2


async def test_cancelled_caller_does_not_cancel_shared_fetch(store: KeyStore, issuer: FakeIssuer) -> None:
    issuer.hold()
    provider = issuer.provider(direct=True)
    first = asyncio.create_task(store.key(provider, "rsa-1", "RS256"))
    second = asyncio.create_task(store.key(provider, "rsa-1", "RS256"))
    await issuer.entered.wait()
    first.cancel()
    issuer.release()
    assert (await second).key_id == "rsa-1"
    assert first.cancelled() and issuer.jwks_requests == 1


async def test_prime_fetches_providers_concurrently_once_per_source(clock: FakeClock) -> None:
    one, two = FakeIssuer(RSA, issuer="https://one.test"), FakeIssuer(EC, issuer="https://two.test")
    one.hold()
    two.hold()

    async def handler(request: httpx.Request) -> httpx.Response:
        return await (one if request.url.host == "one.test" else two).handle(request)

    providers = [one.provider("a"), one.provider("a-again"), two.provider("b")]
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        store = KeyStore(client, clock)
        priming = asyncio.create_task(store.prime(providers))
        # Both issuers are asked before either answers: the fetches overlap.
        await asyncio.gather(one.entered.wait(), two.entered.wait())
        one.release()
        two.release()
        await priming
    assert store.ready(providers)
    assert one.jwks_requests == 1 and two.jwks_requests == 1  # "a" and "a-again" share issuer and jwks_uri
    await store.prime([])


async def test_state_survives_reload_of_same_provider(store: KeyStore, issuer: FakeIssuer) -> None:
    await store.prime([issuer.provider("before")])
    reloaded = issuer.provider("after", audiences=frozenset({"other"}))
    assert store.ready([reloaded])
    assert (await store.key(reloaded, "rsa-1", "RS256")).key_id == "rsa-1"
    assert store.fetch_count(reloaded) == 1
    assert not store.ready([issuer.provider(direct=True)])  # another key source is another state
