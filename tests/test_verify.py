"""Verifier: one row per Reason plus the classic JWT attacks, the leeway edges, and the verified-identity cache."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest

from sidecar.auth.keys import KeyStore
from sidecar.auth.verify import MAX_TOKEN_CHARS, Verifier
from sidecar.policy.model import Identity, Provider
from sidecar.reasons import Reason, Rejection
from tests.support.jwtkit import (
    AUDIENCE,
    ISSUER,
    FakeClock,
    FakeIssuer,
    KeyPair,
    b64url,
    claims,
    ec_key,
    forge_hs256_with_public_pem,
    forge_unsigned,
    jwks,
    mint,
    rsa_key,
    serve,
    strip_signature,
    swap_signature,
    tamper_payload,
)

NOW = 1_700_000_000
LEEWAY = 60
CANARY = "CANARY-subject-7f3a9c"  # must never show up in an exception message or a log line
RSA, RSA2, EC = rsa_key("rsa-1"), rsa_key("rsa-2"), ec_key("ec-1")
SOLO = rsa_key("solo-1")
ATTACKER = rsa_key("attacker")
OTHER_ISSUER = "https://other.test/v2.0"
SOLO_ISSUER = "https://solo.test"
ROUTE = frozenset({"main", "solo"})  # "other" is configured, but not allowed on this route


def good_claims(**changes: Any) -> dict[str, Any]:
    return claims(now=NOW, **{"sub": CANARY, **changes})


def good(key: KeyPair = RSA, **changes: Any) -> str:
    return mint(good_claims(**changes), key)


def raw_token(header: object, payload: object, signature: str = "c2ln") -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}.{signature}"


@dataclass(frozen=True)
class Case:
    id: str
    token: str
    reason: Reason


CASES = [
    # malformed_token: shape, header, payload
    Case("malformed_token-garbage", "garbage", Reason.MALFORMED_TOKEN),
    Case("malformed_token-empty", "", Reason.MALFORMED_TOKEN),
    Case("malformed_token-one-dot", strip_signature(good(), keep_dot=False), Reason.MALFORMED_TOKEN),
    Case("malformed_token-four-segments", good() + ".c2ln", Reason.MALFORMED_TOKEN),
    Case("malformed_token-empty-header", "." + good().split(".", 1)[1], Reason.MALFORMED_TOKEN),
    Case("malformed_token-oversized", good(pad="x" * MAX_TOKEN_CHARS), Reason.MALFORMED_TOKEN),
    Case("malformed_token-non-ascii", good() + "é", Reason.MALFORMED_TOKEN),
    Case("malformed_token-not-base64url", good().replace(".", ".+", 1), Reason.MALFORMED_TOKEN),
    Case("malformed_token-bad-base64-length", "eyJhb." + good().split(".", 1)[1], Reason.MALFORMED_TOKEN),
    Case(
        "malformed_token-header-not-json", b64url(b"not json") + "." + good().split(".", 1)[1], Reason.MALFORMED_TOKEN
    ),
    Case(
        "malformed_token-header-not-utf8", b64url(b"\xff\xfe") + "." + good().split(".", 1)[1], Reason.MALFORMED_TOKEN
    ),
    Case("malformed_token-header-array", raw_token(["RS256"], good_claims()), Reason.MALFORMED_TOKEN),
    Case("malformed_token-header-deep", b64url(b"[" * 6000) + "." + good().split(".", 1)[1], Reason.MALFORMED_TOKEN),
    Case("malformed_token-no-alg", raw_token({"kid": "rsa-1"}, good_claims()), Reason.MALFORMED_TOKEN),
    Case("malformed_token-alg-not-string", raw_token({"alg": 256}, good_claims()), Reason.MALFORMED_TOKEN),
    Case(
        "malformed_token-kid-not-string", raw_token({"alg": "RS256", "kid": 1}, good_claims()), Reason.MALFORMED_TOKEN
    ),
    Case(
        "malformed_token-jku", mint(good_claims(), RSA, headers={"jku": "https://evil.test/k"}), Reason.MALFORMED_TOKEN
    ),
    Case(
        "malformed_token-x5u", mint(good_claims(), RSA, headers={"x5u": "https://evil.test/c"}), Reason.MALFORMED_TOKEN
    ),
    Case(
        "malformed_token-jwk",
        mint(good_claims(), ATTACKER, kid=None, headers={"jwk": ATTACKER.jwk()}),
        Reason.MALFORMED_TOKEN,
    ),
    Case("malformed_token-x5c", mint(good_claims(), RSA, headers={"x5c": ["MIIB"]}), Reason.MALFORMED_TOKEN),
    Case("malformed_token-crit", mint(good_claims(), RSA, headers={"crit": ["exp"], "exp": 1}), Reason.MALFORMED_TOKEN),
    Case("malformed_token-payload-array", raw_token({"alg": "RS256"}, [ISSUER]), Reason.MALFORMED_TOKEN),
    Case("malformed_token-payload-not-base64", good().split(".")[0] + ".e.c2ln", Reason.MALFORMED_TOKEN),
    Case("malformed_token-iss-not-string", tamper_payload(good(), iss=["x"]), Reason.MALFORMED_TOKEN),
    # malformed_token: claims that only a verified token reveals
    Case("malformed_token-missing-exp", good(exp=None), Reason.MALFORMED_TOKEN),
    Case("malformed_token-exp-string", good(exp=str(NOW + 300)), Reason.MALFORMED_TOKEN),
    Case("malformed_token-exp-bool", good(exp=True), Reason.MALFORMED_TOKEN),
    Case("malformed_token-exp-infinity", good(exp=float("inf")), Reason.MALFORMED_TOKEN),
    Case("malformed_token-exp-nan", good(exp=float("nan")), Reason.MALFORMED_TOKEN),
    Case("malformed_token-exp-huge", good(exp=10**400), Reason.MALFORMED_TOKEN),
    Case("malformed_token-nbf-string", good(nbf=str(NOW)), Reason.MALFORMED_TOKEN),
    Case("malformed_token-iat-string", good(iat=str(NOW)), Reason.MALFORMED_TOKEN),
    Case("malformed_token-iat-list", good(iat=[NOW]), Reason.MALFORMED_TOKEN),
    Case("malformed_token-sub-not-string", good(sub=42), Reason.MALFORMED_TOKEN),
    # forbidden_algorithm
    Case("forbidden_algorithm-none", forge_unsigned(good_claims(), "none", kid="rsa-1"), Reason.FORBIDDEN_ALGORITHM),
    Case("forbidden_algorithm-None", forge_unsigned(good_claims(), "None"), Reason.FORBIDDEN_ALGORITHM),
    Case("forbidden_algorithm-NONE", forge_unsigned(good_claims(), "NONE"), Reason.FORBIDDEN_ALGORITHM),
    Case(
        "forbidden_algorithm-hs256-public-pem",
        forge_hs256_with_public_pem(good_claims(), RSA),
        Reason.FORBIDDEN_ALGORITHM,
    ),
    Case("forbidden_algorithm-rs512-not-configured", mint(good_claims(), RSA, alg="RS512"), Reason.FORBIDDEN_ALGORITHM),
    Case("forbidden_algorithm-empty", forge_unsigned(good_claims(), ""), Reason.FORBIDDEN_ALGORITHM),
    # wrong_issuer
    Case("wrong_issuer-other", good(iss="https://evil.test/v2.0"), Reason.WRONG_ISSUER),
    Case("wrong_issuer-trailing-slash", good(iss=ISSUER + "/"), Reason.WRONG_ISSUER),
    Case("wrong_issuer-missing", good(iss=None), Reason.WRONG_ISSUER),
    Case(
        "wrong_issuer-provider-not-on-route",
        mint(good_claims(iss=OTHER_ISSUER), rsa_key("other-1")),
        Reason.WRONG_ISSUER,
    ),
    Case("wrong_issuer-before-algorithm", forge_unsigned(good_claims(iss="https://evil.test")), Reason.WRONG_ISSUER),
    # unknown_key
    Case("unknown_key-kid", mint(good_claims(), ATTACKER), Reason.UNKNOWN_KEY),
    Case("unknown_key-ec-key-for-rs256", mint(good_claims(), RSA, kid="ec-1"), Reason.UNKNOWN_KEY),
    Case("unknown_key-no-kid-two-keys", mint(good_claims(), RSA, kid=None), Reason.UNKNOWN_KEY),
    # bad_signature
    Case("bad_signature-tampered-payload", tamper_payload(good(), sub="admin"), Reason.BAD_SIGNATURE),
    Case("bad_signature-tampered-aud", tamper_payload(good(aud="api://other"), aud=AUDIENCE), Reason.BAD_SIGNATURE),
    Case("bad_signature-stripped", strip_signature(good()), Reason.BAD_SIGNATURE),
    Case("bad_signature-swapped", swap_signature(good(), good(sub="someone-else")), Reason.BAD_SIGNATURE),
    Case("bad_signature-attacker-key-real-kid", mint(good_claims(), ATTACKER, kid="rsa-1"), Reason.BAD_SIGNATURE),
    Case("bad_signature-es256-garbage", strip_signature(good(EC)) + b64url(b"x" * 64), Reason.BAD_SIGNATURE),
    Case("bad_signature-es256-short", strip_signature(good(EC)) + b64url(b"x" * 3), Reason.BAD_SIGNATURE),
    # expired (leeway 60 s: exp <= now - 60 is expired)
    Case("expired-long-ago", good(exp=NOW - 3600), Reason.EXPIRED),
    Case("expired-just-outside-leeway", good(exp=NOW - LEEWAY), Reason.EXPIRED),
    # not_yet_valid
    Case("not_yet_valid-nbf", good(nbf=NOW + LEEWAY + 1), Reason.NOT_YET_VALID),
    Case("not_yet_valid-iat-future", good(iat=NOW + LEEWAY + 1), Reason.NOT_YET_VALID),
    # wrong_audience
    Case("wrong_audience-other", good(aud="api://other"), Reason.WRONG_AUDIENCE),
    Case("wrong_audience-missing", good(aud=None), Reason.WRONG_AUDIENCE),
    Case("wrong_audience-empty", good(aud=""), Reason.WRONG_AUDIENCE),
    Case("wrong_audience-list-without-ours", good(aud=["api://a", "api://b"]), Reason.WRONG_AUDIENCE),
    Case("wrong_audience-list-not-strings", good(aud=[AUDIENCE, 1]), Reason.WRONG_AUDIENCE),
    Case("wrong_audience-prefix", good(aud=AUDIENCE + "x"), Reason.WRONG_AUDIENCE),
]

VALID = [
    ("rs256", good(), "main"),
    ("es256", good(EC), "main"),
    ("ps256", mint(good_claims(), RSA, alg="PS256"), "main"),
    ("aud-list-with-ours", good(aud=["api://a", AUDIENCE]), "main"),
    ("exp-just-inside-leeway", good(exp=NOW - LEEWAY + 1), "main"),
    ("exp-float", good(exp=NOW + 0.5), "main"),
    ("nbf-at-leeway-edge", good(nbf=NOW + LEEWAY), "main"),
    ("iat-at-leeway-edge", good(iat=NOW + LEEWAY), "main"),
    ("no-nbf-no-iat", good(nbf=None, iat=None), "main"),
    ("padded-signature", good() + "=" * (-len(good().rsplit(".", 1)[1]) % 4), "main"),
    ("no-kid-one-key", mint(good_claims(iss=SOLO_ISSUER), SOLO, kid=None), "solo"),
    ("x5t-header-allowed", mint(good_claims(), RSA, headers={"x5t": "thumb", "typ": "at+jwt"}), "main"),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def issuers() -> dict[str, FakeIssuer]:
    return {
        "main": FakeIssuer(RSA, EC),
        "other": FakeIssuer(rsa_key("other-1"), issuer=OTHER_ISSUER),
        "solo": FakeIssuer(SOLO, issuer=SOLO_ISSUER),
    }


@pytest.fixture
def providers(issuers: dict[str, FakeIssuer]) -> dict[str, Provider]:
    return {name: issuer.provider(name, leeway=LEEWAY) for name, issuer in issuers.items()}


class CountingKeyStore(KeyStore):
    """Counts key lookups: a cache hit must not make one."""

    lookups = 0

    async def keys(self, provider: Provider, kid: str | None, alg: str) -> tuple[jwt.PyJWK, ...]:
        self.lookups += 1
        return await super().keys(provider, kid, alg)


@pytest.fixture
async def client(issuers: dict[str, FakeIssuer]) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(*issuers.values()) as client:
        yield client


@pytest.fixture
def keys(client: httpx.AsyncClient) -> CountingKeyStore:
    return CountingKeyStore(client, FakeClock())


@pytest.fixture
def verifier(providers: dict[str, Provider], keys: CountingKeyStore, clock: FakeClock) -> Verifier:
    return Verifier(providers, keys, clock=clock)


async def rejected(verifier: Verifier, token: str, allowed: frozenset[str] = ROUTE) -> Rejection:
    with pytest.raises(Rejection) as caught:
        await verifier.verify(token, allowed)
    return caught.value


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_rejections(verifier: Verifier, case: Case) -> None:
    assert (await rejected(verifier, case.token)).reason is case.reason


@pytest.mark.parametrize(("token", "provider"), [(t, p) for _, t, p in VALID], ids=[i for i, _, _ in VALID])
async def test_valid(verifier: Verifier, token: str, provider: str) -> None:
    identity = await verifier.verify(token, ROUTE)
    assert identity.provider == provider
    assert identity.claims["sub"] == CANARY
    assert identity.expires_at == float(identity.claims["exp"])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        identity.claims["sub"] = "changed"  # type: ignore[index]


def test_every_token_reason_has_a_row() -> None:
    token_reasons = {
        Reason.MALFORMED_TOKEN,
        Reason.FORBIDDEN_ALGORITHM,
        Reason.WRONG_ISSUER,
        Reason.UNKNOWN_KEY,
        Reason.BAD_SIGNATURE,
        Reason.EXPIRED,
        Reason.NOT_YET_VALID,
        Reason.WRONG_AUDIENCE,
    }
    assert token_reasons <= {case.reason for case in CASES}


async def test_keys_unavailable(verifier: Verifier, issuers: dict[str, FakeIssuer]) -> None:
    issuers["main"].error = httpx.ConnectError("refused")
    assert (await rejected(verifier, good())).reason is Reason.KEYS_UNAVAILABLE


async def test_no_signature_work_before_issuer_and_algorithm(verifier: Verifier, keys: CountingKeyStore) -> None:
    for token in (
        good(iss="https://evil.test"),
        forge_unsigned(good_claims()),
        forge_hs256_with_public_pem(good_claims(), RSA),
    ):
        await rejected(verifier, token)
    assert keys.lookups == 0


async def test_issuer_shared_by_two_providers_picks_by_audience(keys: KeyStore, clock: FakeClock) -> None:
    issuer = FakeIssuer(RSA)
    a = issuer.provider("a", audiences=frozenset({"api://a"}))
    b = issuer.provider("b", audiences=frozenset({"api://b"}))
    verifier = Verifier({"a": a, "b": b}, keys, clock=clock)
    for_b = mint(good_claims(aud="api://b"), RSA)
    assert (await verifier.verify(for_b, frozenset({"a", "b"}))).provider == "b"
    assert (await verifier.verify(mint(good_claims(aud="api://a"), RSA), frozenset({"a", "b"}))).provider == "a"
    assert (await rejected(verifier, for_b, frozenset({"a"}))).reason is Reason.WRONG_AUDIENCE
    assert (
        await verifier.verify(mint(good_claims(aud=["api://x", "api://b"]), RSA), frozenset({"a", "b"}))
    ).provider == "b"
    neither = mint(good_claims(aud="api://x"), RSA)
    assert (await rejected(verifier, neither, frozenset({"a", "b"}))).reason is Reason.WRONG_AUDIENCE
    no_aud = mint(good_claims(aud=None), RSA)
    assert (await rejected(verifier, no_aud, frozenset({"a", "b"}))).reason is Reason.WRONG_AUDIENCE
    both = mint(good_claims(aud=["api://a", "api://b"]), RSA)
    assert (await verifier.verify(both, frozenset({"b"}))).provider == "b"
    assert (await verifier.verify(both, frozenset({"a"}))).provider == "a"  # cached as b, not allowed: re-verified


# --- the cache ---------------------------------------------------------------------------------------------------


async def test_cache_hit_skips_key_store(verifier: Verifier, keys: CountingKeyStore) -> None:
    token = good()
    first = await verifier.verify(token, ROUTE)
    second = await verifier.verify(token, ROUTE)
    assert second is first and keys.lookups == 1


async def test_cache_hit_checks_route_providers(verifier: Verifier, keys: CountingKeyStore) -> None:
    token = good()
    await verifier.verify(token, ROUTE)
    assert (await rejected(verifier, token, frozenset({"solo"}))).reason is Reason.WRONG_ISSUER
    assert (await rejected(verifier, token, frozenset())).reason is Reason.WRONG_ISSUER
    assert keys.lookups == 1


async def test_cache_entry_expires_at_exp_plus_leeway(
    verifier: Verifier, keys: CountingKeyStore, clock: FakeClock
) -> None:
    token = good(exp=NOW + 100)
    await verifier.verify(token, ROUTE)
    clock.now = NOW + 100 + LEEWAY - 1
    await verifier.verify(token, ROUTE)
    assert keys.lookups == 1
    clock.now = NOW + 100 + LEEWAY
    assert (await rejected(verifier, token)).reason is Reason.EXPIRED
    assert keys.lookups == 2


async def test_after_an_issuer_takes_a_key_away_tokens_are_cached_again(
    verifier: Verifier, keys: CountingKeyStore, providers: dict[str, Provider], issuers: dict[str, FakeIssuer]
) -> None:
    """The cache is emptied once when a key goes (a cached token must not outlive its key), then serves again."""
    await keys.prime([providers["main"]])
    issuers["main"].jwks = jwks(RSA)  # the EC key taken away
    await keys.prime([providers["main"]])
    token = good()
    first = await verifier.verify(token, ROUTE)
    assert await verifier.verify(token, ROUTE) is first
    assert keys.lookups == 1


async def test_failures_are_not_cached(verifier: Verifier, keys: CountingKeyStore) -> None:
    token = tamper_payload(good(), sub="admin")
    for _ in range(2):
        assert (await rejected(verifier, token)).reason is Reason.BAD_SIGNATURE
    assert keys.lookups == 2


async def test_cache_is_bounded(providers: dict[str, Provider], keys: CountingKeyStore, clock: FakeClock) -> None:
    verifier = Verifier(providers, keys, clock=clock, cache_size=2)
    tokens = [good(jti=str(i)) for i in range(3)]
    for token in tokens:
        await verifier.verify(token, ROUTE)
    await verifier.verify(tokens[0], ROUTE)  # evicted (least recently used): verified again
    assert keys.lookups == 4


# --- the token never leaves -----------------------------------------------------------------------------------------


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_no_token_in_exceptions_or_logs(verifier: Verifier, case: Case, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rejection = await rejected(verifier, case.token)
    assert str(rejection) == case.reason.value and rejection.args == (case.reason.value,)
    secrets = [part for part in case.token.split(".") if len(part) >= 8] + [CANARY]
    texts = [str(exc) for exc in _chain(rejection)] + [repr(exc) for exc in _chain(rejection)] + [caplog.text]
    assert not [s for s in secrets for text in texts if s in text]


async def test_identity_cache_does_not_hold_the_token(verifier: Verifier) -> None:
    token = good()
    await verifier.verify(token, ROUTE)
    cache = verifier._cache  # white-box: the key must be a digest, not the token
    assert [len(key) for key in cache] == [32]
    assert all(isinstance(value, Identity) for value in cache.values())


# --- RFC 8725 hardening that depends on the provider -----------------------------------------------------------


@pytest.mark.parametrize(
    ("typ", "accepted"),
    [
        ("at+jwt", True),
        ("AT+JWT", True),
        ("application/at+jwt", True),
        ("JWT", False),
        (None, False),
        (["at+jwt"], False),
        ("at+jwt; charset=x", False),
    ],
    ids=["exact", "any-case", "with-application-prefix", "plain-jwt", "missing", "not-a-string", "with-parameter"],
)
async def test_required_typ(keys: KeyStore, clock: FakeClock, typ: object, accepted: bool) -> None:
    """RFC 9068 access tokens say `typ: at+jwt`; requiring it keeps ID tokens and other JWTs of the same issuer out."""
    provider = FakeIssuer(RSA, EC).provider("main", require_typ="at+jwt")
    verifier = Verifier({"main": provider}, keys, clock=clock)
    token = mint(good_claims(), RSA, headers={"typ": typ})
    if accepted:
        assert (await verifier.verify(token, frozenset({"main"}))).provider == "main"
    else:
        assert (await rejected(verifier, token, frozenset({"main"}))).reason is Reason.WRONG_TOKEN_TYPE


async def test_typ_is_not_checked_unless_required(verifier: Verifier) -> None:
    assert (await verifier.verify(mint(good_claims(), RSA, headers={"typ": "id+jwt"}), ROUTE)).provider == "main"


async def test_token_size_cap_is_the_largest_of_the_route_providers(
    issuers: dict[str, FakeIssuer], keys: CountingKeyStore, clock: FakeClock
) -> None:
    small = issuers["main"].provider("main", max_token_bytes=2048)
    large = issuers["solo"].provider("solo", max_token_bytes=8192)
    verifier = Verifier({"main": small, "solo": large}, keys, clock=clock)
    token = good(pad="x" * 2500)
    assert (await rejected(verifier, token, frozenset({"main"}))).reason is Reason.MALFORMED_TOKEN
    assert keys.lookups == 0  # refused before parsing
    assert (await verifier.verify(token, frozenset({"main", "solo"}))).provider == "main"


async def test_refused_signature_is_refused_again_for_its_route_only(verifier: Verifier) -> None:
    """A flood of one bad token is answered from the refusal cache; another route's providers get their own answer."""
    token = tamper_payload(good(), sub="admin")
    for _ in range(3):
        assert (await rejected(verifier, token)).reason is Reason.BAD_SIGNATURE
    assert (await rejected(verifier, token, frozenset({"solo"}))).reason is Reason.WRONG_ISSUER


async def test_refused_signature_is_checked_again_with_a_new_key_under_the_same_kid(
    verifier: Verifier, keys: CountingKeyStore, providers: dict[str, Provider], issuers: dict[str, FakeIssuer]
) -> None:
    """A token refused against the old key of a kid is accepted once the issuer publishes its new key there."""
    renewed = rsa_key("rsa-1", bits=3072)  # new key material, same kid
    token = good(renewed)
    assert (await rejected(verifier, token)).reason is Reason.BAD_SIGNATURE
    issuers["main"].jwks = jwks(renewed, EC)
    await keys.prime([providers["main"]])
    assert (await verifier.verify(token, ROUTE)).provider == "main"
