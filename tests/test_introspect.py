"""Opaque tokens through RFC 7662 introspection: answers, caching, failures as 503 (never 401), client auth, single
flight, and how the verifier chooses between a JWT provider and the route's introspection provider."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sidecar.auth import introspect as introspect_module
from sidecar.auth.introspect import Introspector
from sidecar.auth.keys import KeyStore
from sidecar.auth.verify import Verifier
from sidecar.policy.model import Introspection, Provider
from sidecar.reasons import Reason, Rejection
from tests.support.jwtkit import FakeClock, FakeIntrospection, FakeIssuer, claims, mint, rsa_key

NOW = 1_700_000_000.0
TOKEN = "opaque-7f3a9c2e5d1b4a6f8e0c9d2b"  # must never show up in a log line or an exception
ENDPOINT = Introspection("https://idp.test/oauth2/introspect", "sidecar", "s3cret", cache=300.0, inactive_cache=10.0)
OPAQUE = Provider("opaque", "", frozenset({"api://app"}), None, introspection=ENDPOINT)


def active(**extra: Any) -> dict[str, Any]:
    return {"active": True, "sub": "user-1", "client_id": "client-1", "aud": "api://app", "exp": NOW + 600, **extra}


class Failures:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, provider: str, error: str) -> None:
        self.seen.append((provider, error))


@pytest.fixture
def server() -> FakeIntrospection:
    return FakeIntrospection(ENDPOINT.endpoint)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def failures() -> Failures:
    return Failures()


@pytest.fixture
async def introspector(server: FakeIntrospection, clock: FakeClock, failures: Failures) -> AsyncIterator[Introspector]:
    async with server.client() as client:
        yield Introspector(client, clock, on_failure=failures)


async def reason_of(introspector: Introspector, provider: Provider = OPAQUE, token: str = TOKEN) -> Reason:
    with pytest.raises(Rejection) as caught:
        await introspector.introspect(provider, token)
    return caught.value.reason


# --- answers ----------------------------------------------------------------------------------------------------


async def test_active_token_is_the_identity(introspector: Introspector, server: FakeIntrospection) -> None:
    server.answers[TOKEN] = active(username="lisa@contoso.com", scope="read write")
    identity = await introspector.introspect(OPAQUE, TOKEN)
    assert identity.provider == "opaque" and identity.expires_at == NOW + 600
    assert identity.subject == "user-1" and identity.app == "client-1"
    assert identity.user == "lisa@contoso.com"  # RFC 7662 `username`, matched like preferred_username
    assert "active" not in identity.claims
    ((form, authorization),) = server.calls
    assert form == {"token": TOKEN, "token_type_hint": "access_token"}
    assert authorization == "Basic " + base64.b64encode(b"sidecar:s3cret").decode()


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"active": False}, Reason.TOKEN_INACTIVE),
        (active(exp=NOW - 61), Reason.EXPIRED),
        (active(nbf=NOW + 61), Reason.NOT_YET_VALID),
        (active(aud="api://other"), Reason.WRONG_AUDIENCE),
        (active(aud=["api://a", "api://b"]), Reason.WRONG_AUDIENCE),
        (active(aud=None), Reason.WRONG_AUDIENCE),
    ],
    ids=["inactive", "expired", "not-yet-valid", "other-audience", "audience-list-without-ours", "no-audience"],
)
async def test_refused_answers(
    introspector: Introspector, server: FakeIntrospection, answer: dict[str, Any], reason: Reason
) -> None:
    server.answers[TOKEN] = {k: v for k, v in answer.items() if v is not None}
    assert await reason_of(introspector) is reason


@pytest.mark.parametrize(
    "aud", ["api://app", ["x", "api://app"], "x api://app"], ids=["string", "list", "space-separated"]
)
async def test_audience_forms(introspector: Introspector, server: FakeIntrospection, aud: object) -> None:
    server.answers[TOKEN] = active(aud=aud)
    assert (await introspector.introspect(OPAQUE, TOKEN)).provider == "opaque"


async def test_without_configured_audiences_any_audience_passes(
    introspector: Introspector, server: FakeIntrospection
) -> None:
    server.answers[TOKEN] = {"active": True, "sub": "s"}
    lax = Provider("opaque", "", frozenset(), None, introspection=ENDPOINT)
    assert (await introspector.introspect(lax, TOKEN)).subject == "s"


async def test_client_credentials_are_form_encoded_before_base64(server: FakeIntrospection, clock: FakeClock) -> None:
    odd = Provider("o", "", frozenset(), None, introspection=Introspection(ENDPOINT.endpoint, "a:b", "p@ss w/rd"))
    server.answers[TOKEN] = {"active": True}
    async with server.client() as client:
        await Introspector(client, clock).introspect(odd, TOKEN)
    assert server.calls[0][1] == "Basic " + base64.b64encode(b"a%3Ab:p%40ss+w%2Frd").decode()  # RFC 6749 §2.3.1


# --- caching ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exp", "cached_for"), [(NOW + 100, 100.0), (NOW + 3600, 300.0), (None, 300.0)], ids=["until-exp", "cap", "no-exp"]
)
async def test_active_answers_are_cached_until_exp_at_most_the_cache_time(
    introspector: Introspector, server: FakeIntrospection, clock: FakeClock, exp: float | None, cached_for: float
) -> None:
    server.answers[TOKEN] = {k: v for k, v in active(exp=exp).items() if v is not None}
    await introspector.introspect(OPAQUE, TOKEN)
    clock.now += cached_for - 0.001
    await introspector.introspect(OPAQUE, TOKEN)
    assert len(server.calls) == 1
    clock.now += 0.001
    await introspector.introspect(OPAQUE, TOKEN)  # asked again (within leeway the server's answer still holds)
    assert len(server.calls) == 2


async def test_inactive_answers_are_cached_briefly(
    introspector: Introspector, server: FakeIntrospection, clock: FakeClock
) -> None:
    for _ in range(3):
        assert await reason_of(introspector) is Reason.TOKEN_INACTIVE
    assert len(server.calls) == 1
    clock.now += ENDPOINT.inactive_cache
    server.answers[TOKEN] = active()  # e.g. a token the server did not know yet
    assert (await introspector.introspect(OPAQUE, TOKEN)).subject == "user-1"


async def test_concurrent_requests_share_one_call(introspector: Introspector, server: FakeIntrospection) -> None:
    server.answers[TOKEN] = active()
    server.hold()
    tasks = [asyncio.create_task(introspector.introspect(OPAQUE, TOKEN)) for _ in range(50)]
    await server.entered.wait()
    server.release()
    assert {identity.subject for identity in await asyncio.gather(*tasks)} == {"user-1"}
    assert len(server.calls) == 1


def bounded(max_in_flight: int, max_waiting: int, name: str = "opaque") -> Provider:
    endpoint = dataclasses.replace(ENDPOINT, max_in_flight=max_in_flight, max_waiting=max_waiting)
    return dataclasses.replace(OPAQUE, name=name, introspection=endpoint)


async def settle() -> None:
    for _ in range(20):  # let every task reach the semaphore or the server (bounded; no clock involved)
        await asyncio.sleep(0)


async def test_calls_in_flight_are_bounded(introspector: Introspector, server: FakeIntrospection) -> None:
    server.hold()
    tasks = [asyncio.create_task(introspector.introspect(bounded(2, 8), f"token-{i}")) for i in range(5)]
    await server.entered.wait()
    await settle()
    assert len(server.calls) == 2
    server.release()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert len(server.calls) == 5
    assert all(isinstance(r, Rejection) and r.reason is Reason.TOKEN_INACTIVE for r in results)


async def test_requests_past_max_waiting_are_refused_at_once_and_counted(
    introspector: Introspector, server: FakeIntrospection, failures: Failures
) -> None:
    """A hung endpoint: 2 calls in flight, 1 waiting for a slot, and a request sharing a call fill max_waiting (4).
    The next request is 503 introspection_unavailable at once (no call, no wait for the timeout), counted as
    `overloaded`; another provider's lane and a cached token are not held back."""
    provider = bounded(2, 4)
    server.answers[TOKEN] = active()
    assert (await introspector.introspect(provider, TOKEN)).subject == "user-1"  # cached from here on
    server.hold()  # never released before the refusals: the endpoint hangs
    tokens = ["token-0", "token-1", "token-2", "token-0"]
    tasks = [asyncio.create_task(introspector.introspect(provider, token)) for token in tokens]
    await server.entered.wait()
    await settle()
    calls = len(server.calls)
    for token in ("token-3", "token-4"):
        assert await reason_of(introspector, provider, token) is Reason.INTROSPECTION_UNAVAILABLE
    assert failures.seen == [("opaque", "overloaded")] * 2
    assert len(server.calls) == calls == 1 + 2  # the cached token's call, then max_in_flight
    assert not any(task.done() for task in tasks)
    assert (await introspector.introspect(provider, TOKEN)).subject == "user-1"
    other = asyncio.create_task(introspector.introspect(bounded(2, 4, name="other"), "token-5"))
    await settle()
    assert len(server.calls) == calls + 1  # its own lane: asked at once
    server.release()
    results = await asyncio.gather(*tasks, other, return_exceptions=True)
    assert all(isinstance(r, Rejection) and r.reason is Reason.TOKEN_INACTIVE for r in results)
    assert failures.seen == [("opaque", "overloaded")] * 2
    assert await reason_of(introspector, provider, "token-3") is Reason.TOKEN_INACTIVE  # room again


# --- failures: 503, counted, never cached, never the token -----------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "kind"),
    [
        ({"status": 500}, "http_status"),
        ({"status": 401}, "http_status"),
        ({"error": httpx.ConnectError("refused")}, "unreachable"),
        ({"error": httpx.ReadTimeout("slow")}, "timeout"),
        ({"body": b"<html>"}, "bad_response"),
        ({"body": b"[]"}, "bad_response"),
        ({"body": b'{"sub": "x"}'}, "bad_response"),
        ({"body": b'{"active": "true"}'}, "bad_response"),
        ({"body": b'{"active": true, "exp": "1700000600"}'}, "bad_response"),
    ],
    ids=[
        "server-error",
        "client-auth-refused",
        "unreachable",
        "read-timeout",
        "not-json",
        "not-an-object",
        "no-active",
        "active-not-boolean",
        "exp-not-a-number",
    ],
)
async def test_failures_are_503_counted_and_not_cached(
    introspector: Introspector,
    server: FakeIntrospection,
    failures: Failures,
    setup: dict[str, Any],
    kind: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, value in setup.items():
        setattr(server, name, value)
    for _ in range(2):
        assert await reason_of(introspector) is Reason.INTROSPECTION_UNAVAILABLE
    assert len(server.calls) == 2  # a failure is never cached: the next request asks again
    assert failures.seen == [("opaque", kind)] * 2
    assert TOKEN not in caplog.text and "s3cret" not in caplog.text


async def test_a_slow_server_is_a_timeout(
    introspector: Introspector, server: FakeIntrospection, failures: Failures, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(introspect_module, "INTROSPECTION_TIMEOUT_SECONDS", 0.01)
    server.hold()  # never released: the server does not answer
    assert await reason_of(introspector) is Reason.INTROSPECTION_UNAVAILABLE
    assert failures.seen == [("opaque", "timeout")]


# --- which path a token takes --------------------------------------------------------------------------------------

KEY = rsa_key("jwt-1")
JWT_ISSUER = FakeIssuer(KEY, issuer="https://jwt.test/v2.0")
JWT = JWT_ISSUER.provider("jwt")
BOTH = frozenset({"jwt", "opaque"})


@pytest.fixture
async def verifier(server: FakeIntrospection, clock: FakeClock) -> AsyncIterator[Verifier]:
    async def handle(request: httpx.Request) -> httpx.Response:
        target = server if request.url.host == "idp.test" else JWT_ISSUER
        return await target.handle(request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        keys = KeyStore(client, FakeClock())
        yield Verifier({"jwt": JWT, "opaque": OPAQUE}, keys, clock=clock, introspector=Introspector(client, clock))


def jwt_token(**changes: Any) -> str:
    return mint(claims(now=NOW, **{"iss": JWT_ISSUER.issuer, **changes}), KEY)


@pytest.mark.parametrize(
    ("token", "allowed", "provider", "asked"),
    [
        (TOKEN, BOTH, "opaque", True),
        ("a.b.c", BOTH, "opaque", True),
        (jwt_token(), BOTH, "jwt", False),
        (jwt_token(iss="https://keycloak.test/realms/x"), BOTH, "opaque", True),
        (jwt_token(iss="https://jwt.test/v2.0"), frozenset({"opaque"}), "opaque", True),
    ],
    ids=[
        "opaque",
        "three-segments-not-json",
        "jwt-of-a-jwt-provider",
        "jwt-of-another-issuer",
        "jwt-provider-not-on-route",
    ],
)
async def test_token_goes_to_introspection_when_no_jwt_provider_takes_it(
    verifier: Verifier, server: FakeIntrospection, token: str, allowed: frozenset[str], provider: str, asked: bool
) -> None:
    server.answers[token] = active()
    assert (await verifier.verify(token, allowed)).provider == provider
    assert bool(server.calls) is asked


@pytest.mark.parametrize(
    ("token", "allowed", "reason"),
    [
        (TOKEN, frozenset({"jwt"}), Reason.MALFORMED_TOKEN),
        (jwt_token(iss="https://other.test"), frozenset({"jwt"}), Reason.WRONG_ISSUER),
        (mint(claims(now=NOW), KEY, headers={"jku": "https://evil.test/keys"}), BOTH, Reason.MALFORMED_TOKEN),
        (TOKEN, BOTH, Reason.TOKEN_INACTIVE),
    ],
    ids=["opaque-without-introspection", "jwt-of-another-issuer", "jwt-with-jku-never-introspected", "inactive"],
)
async def test_refusals_by_path(
    verifier: Verifier, server: FakeIntrospection, token: str, allowed: frozenset[str], reason: Reason
) -> None:
    with pytest.raises(Rejection) as caught:
        await verifier.verify(token, allowed)
    assert caught.value.reason is reason
    assert bool(server.calls) is (reason is Reason.TOKEN_INACTIVE)


async def test_verifier_without_introspector_says_unavailable(clock: FakeClock) -> None:
    async with JWT_ISSUER.client() as client:
        verifier = Verifier({"opaque": OPAQUE}, KeyStore(client, FakeClock()), clock=clock)
        with pytest.raises(Rejection) as caught:
            await verifier.verify(TOKEN, frozenset({"opaque"}))
    assert caught.value.reason is Reason.INTROSPECTION_UNAVAILABLE
