"""One bad key never hides the good ones, keys sharing a kid are each tried (bounded), and a verified token stays
verified only while the issuer still publishes the key that signed it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sidecar.auth.jwks import MAX_KEYS_PER_KID
from sidecar.auth.keys import KeyStore
from sidecar.auth.verify import Verifier
from sidecar.reasons import Reason, Rejection
from tests.support.jwtkit import FakeClock, FakeIssuer, claims, ec_key, jwks, mint, rsa_key

NOW = 1_700_000_000.0
RSA = rsa_key("rsa-1")
RSA2 = rsa_key("rsa-2")
EC = ec_key("ec-1")
ROUTE = frozenset({"main"})


@pytest.fixture
def issuer() -> FakeIssuer:
    return FakeIssuer(RSA)


@pytest.fixture
async def client(issuer: FakeIssuer) -> AsyncIterator[httpx.AsyncClient]:
    async with issuer.client() as client:
        yield client


@pytest.fixture
def keys(client: httpx.AsyncClient) -> KeyStore:
    return KeyStore(client, FakeClock())


@pytest.fixture
def verifier(issuer: FakeIssuer, keys: KeyStore) -> Verifier:
    return Verifier({"main": issuer.provider()}, keys, clock=FakeClock(NOW))


async def reason_of(verifier: Verifier, token: str) -> Reason:
    with pytest.raises(Rejection) as caught:
        await verifier.verify(token, ROUTE)
    return caught.value.reason


# --- a malformed key is dropped alone ------------------------------------------------------------------------------

MALFORMED = [
    RSA2.jwk(crv=["P-256"]),
    RSA2.jwk(crv={"name": "P-256"}),
    EC.jwk(kid="ec-bad", crv=["P-256"]),
    EC.jwk(kid="ec-bad", crv={"a": 1}),
    RSA2.jwk(n=12345),
    RSA2.jwk(e=[1, 0, 1]),
    RSA2.jwk(kty=["RSA"]),
    RSA2.jwk(kty={"RSA": True}),
    RSA2.jwk(kid=["rsa-2"]),
    RSA2.jwk(alg={"name": "RS256"}),
    RSA2.jwk(use=["sig"]),
    RSA2.jwk(key_ops=[{"op": "verify"}]),
    RSA2.jwk(key_ops=[["verify"]]),
    EC.jwk(kid="ec-bad", x=None),
    EC.jwk(kid="ec-bad", x=7),
    EC.jwk(kid="ec-bad", y=True),
    EC.jwk(kid="ec-bad", x="!!not base64!!"),
    {"kty": "RSA"},
    {"kty": "EC", "crv": "P-256", "kid": "ec-bad"},
    {"kty": "OKP", "crv": "Ed25519", "x": 5},
    ["not", "an", "object"],
    None,
    3.5,
]


@pytest.mark.parametrize("malformed", MALFORMED, ids=[f"{i}-{str(m)[:30]}" for i, m in enumerate(MALFORMED)])
async def test_a_key_of_an_unexpected_shape_is_dropped_and_the_good_ones_verify(
    issuer: FakeIssuer, verifier: Verifier, malformed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issuer.jwks = jwks(malformed, RSA, malformed)  # on both sides of the good key
    token = mint(claims(now=NOW, iss=issuer.issuer), RSA)
    assert (await verifier.verify(token, ROUTE)).provider == "main"
    key_material = [str(value) for value in (RSA2.jwk()["n"], EC.jwk()["x"], EC.jwk()["y"])]
    assert not any(material[:16] in caplog.text for material in key_material)  # never key material in a log line


async def test_a_malformed_key_is_logged_by_kid_only(
    issuer: FakeIssuer, verifier: Verifier, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    issuer.jwks = jwks(RSA, EC.jwk(kid="ec-bad", crv=["P-256"]))
    await verifier.verify(mint(claims(now=NOW, iss=issuer.issuer), RSA), ROUTE)
    (record,) = [r for r in caplog.records if r.getMessage() == "JWKS key dropped"]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields == {"provider": "main", "index": 1, "kid": "ec-bad", "problem": "`crv` is not a string"}
    assert record.levelno == logging.WARNING


# --- keys sharing a kid ----------------------------------------------------------------------------------------------


async def test_every_key_sharing_the_kid_is_tried(issuer: FakeIssuer, verifier: Verifier) -> None:
    """An issuer mid-rotation publishes the old and the new key under one kid: tokens of either verify."""
    others = [rsa_key(f"other-{i}") for i in range(MAX_KEYS_PER_KID - 1)]
    issuer.jwks = jwks(*(key.jwk(kid="same") for key in [*others, RSA]), EC.jwk(kid="same"))
    for key in (others[0], RSA):
        token = mint(claims(now=NOW, iss=issuer.issuer), key, kid="same")
        assert (await verifier.verify(token, ROUTE)).provider == "main"
    assert await reason_of(verifier, mint(claims(now=NOW, iss=issuer.issuer), RSA2, kid="same")) is (
        Reason.BAD_SIGNATURE
    )


async def test_at_most_four_keys_are_tried_for_one_kid(issuer: FakeIssuer, verifier: Verifier) -> None:
    decoys = [rsa_key(f"other-{i}") for i in range(MAX_KEYS_PER_KID)]
    issuer.jwks = jwks(*(key.jwk(kid="same") for key in [*decoys, RSA]))
    token = mint(claims(now=NOW, iss=issuer.issuer), RSA, kid="same")
    assert await reason_of(verifier, token) is Reason.BAD_SIGNATURE  # the fifth is never tried: bounded work


# --- a cached token outlives neither its key -------------------------------------------------------------------------


async def test_a_cached_token_is_refused_once_the_issuer_removed_its_key(
    issuer: FakeIssuer, keys: KeyStore, verifier: Verifier
) -> None:
    issuer.jwks = jwks(RSA, RSA2)
    token = mint(claims(now=NOW, iss=issuer.issuer), RSA)
    assert (await verifier.verify(token, ROUTE)).provider == "main"  # verified, and now cached
    issuer.jwks = jwks(RSA2)  # the issuer rotates rsa-1 out (a compromised key, say)
    await keys.prime([issuer.provider()])  # the scheduled refetch
    assert await reason_of(verifier, token) is Reason.UNKNOWN_KEY
    assert (await verifier.verify(mint(claims(now=NOW, iss=issuer.issuer), RSA2), ROUTE)).provider == "main"


async def test_a_cached_token_is_refused_once_its_kid_names_other_material(
    issuer: FakeIssuer, keys: KeyStore, verifier: Verifier
) -> None:
    token = mint(claims(now=NOW, iss=issuer.issuer), RSA)
    await verifier.verify(token, ROUTE)
    issuer.jwks = jwks(RSA2.jwk(kid="rsa-1"))  # same kid, another key
    await keys.prime([issuer.provider()])
    assert await reason_of(verifier, token) is Reason.BAD_SIGNATURE


async def test_a_fetch_that_only_adds_keys_keeps_the_cache(
    issuer: FakeIssuer, keys: KeyStore, verifier: Verifier
) -> None:
    token = mint(claims(now=NOW, iss=issuer.issuer), RSA)
    first = await verifier.verify(token, ROUTE)
    issuer.jwks = jwks(RSA, RSA2)
    await keys.prime([issuer.provider()])
    assert await verifier.verify(token, ROUTE) is first  # the same cached identity: no signature check again
