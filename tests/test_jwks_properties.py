"""Property tests over JWKS and discovery documents: no document makes the parsers raise anything but their typed
refusal (JwksError, FetchError), and a good key verifies whatever junk stands beside it."""

from __future__ import annotations

from typing import Any

import jwt
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.auth.discovery import jwks_uri_of
from sidecar.auth.issuer_http import FetchError
from sidecar.auth.jwks import ASYMMETRIC_ALGORITHMS, MAX_KEYS_PER_KID, JwksError, Key, find, index, parse_jwks
from tests.support.examples import examples
from tests.support.jwtkit import ec_key, ed_key, rsa_key
from tests.test_properties import SETTINGS as TOKEN_SETTINGS
from tests.test_properties import json_values

SETTINGS = settings(TOKEN_SETTINGS, max_examples=examples(300))  # derandomised, no database: reproducible
GOOD = rsa_key("good")
OTHER = [rsa_key("rsa-2"), ec_key("ec-1"), ec_key("ec-384", "P-384"), ed_key("ed-1")]
MESSAGE = b"header.payload"
SIGNATURE = jwt.get_algorithm_by_name("RS256").sign(MESSAGE, GOOD.private)  # type: ignore[arg-type]

# Members drawn from real keys (so that a junk entry is often almost a key) or from any JSON value.
_REAL = [key.jwk() for key in [GOOD, *OTHER]]


def _member(name: str, extra: list[Any]) -> st.SearchStrategy[Any]:
    real = sorted({str(jwk[name]) for jwk in _REAL if name in jwk})
    return st.sampled_from(real + extra) | json_values if real or extra else json_values


junk_keys = (
    st.fixed_dictionaries(
        {},
        optional={
            "kty": _member("kty", ["oct", "XYZ"]),
            "crv": _member("crv", ["P-521", "secp256k1", "Ed448", "X25519"]),
            "kid": st.sampled_from(["good", "other", ""]) | json_values,
            "alg": st.sampled_from(sorted(ASYMMETRIC_ALGORITHMS) + ["HS256", "none", "RSA-OAEP"]) | json_values,
            "use": st.sampled_from(["sig", "enc"]) | json_values,
            "key_ops": st.lists(st.sampled_from(["verify", "sign", "encrypt"]), max_size=3) | json_values,
            "n": _member("n", ["AQAB", ""]),
            "e": _member("e", ["AQAB", "AA", ""]),
            "x": _member("x", [""]),
            "y": _member("y", [""]),
            "d": json_values,
        },
    )
    | json_values
)
documents = st.fixed_dictionaries({"keys": st.lists(junk_keys, max_size=10)}) | st.dictionaries(
    st.sampled_from(["keys", "other"]), json_values, max_size=2
)


def _parsed(document: dict[str, Any]) -> list[Key]:
    try:
        return parse_jwks(document)
    except JwksError:
        return []


@SETTINGS
@given(document=documents)
def test_any_jwks_document_gives_keys_or_a_jwks_error(document: dict[str, Any]) -> None:
    keys = _parsed(document)
    indexed = index(keys)
    for key in keys:
        assert key.algorithms and key.algorithms <= ASYMMETRIC_ALGORITHMS
        assert any(key.for_algorithm(alg) is not None for alg in key.algorithms)
    for kid in [*indexed, "absent"]:
        for alg in [*ASYMMETRIC_ALGORITHMS, "HS256", "none"]:
            assert len(find(indexed, kid, alg)) <= MAX_KEYS_PER_KID


@SETTINGS
@given(neighbours=st.lists(junk_keys, max_size=10), position=st.integers(min_value=0, max_value=10))
def test_a_good_key_verifies_whatever_junk_stands_beside_it(neighbours: list[Any], position: int) -> None:
    position = min(position, len(neighbours))
    keys = parse_jwks({"keys": [*neighbours[:position], GOOD.jwk(), *neighbours[position:]]})
    found = find(index(keys), "good", "RS256")
    # Only other usable RS256 keys under the same kid, in front of it, can push it past the bound of keys tried.
    ahead = sum(len(find(index(_parsed({"keys": [junk]})), "good", "RS256")) for junk in neighbours[:position])
    if ahead < MAX_KEYS_PER_KID:
        assert any(key.Algorithm.verify(MESSAGE, key.key, SIGNATURE) for key in found)


discovery_documents = st.dictionaries(
    st.sampled_from(["issuer", "jwks_uri", "other"]),
    st.sampled_from(["https://issuer.test", "https://issuer.test/keys"]) | json_values,
    max_size=3,
)


@SETTINGS
@given(document=discovery_documents)
def test_any_discovery_document_gives_a_jwks_uri_or_a_fetch_error(document: dict[str, Any]) -> None:
    try:
        uri = jwks_uri_of(document, frozenset({"https://issuer.test"}), "https://issuer.test/.well-known/x")
    except FetchError:
        assert document.get("issuer") != "https://issuer.test" or not isinstance(document.get("jwks_uri"), str)
    else:
        assert document["issuer"] == "https://issuer.test" and uri == document["jwks_uri"]
