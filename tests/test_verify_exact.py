"""Verification at its edges, as an operator reads the refusals: a token exactly at the size bound is checked, not
refused for size; an undecodable signature is bad_signature; a
refusal for a reason other than the signature is given again, not remembered as a bad signature."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar.auth.verify import MAX_TOKEN_CHARS
from sidecar.policy.model import DEFAULT_MAX_TOKEN_BYTES, Identity
from sidecar.reasons import Reason, Rejection
from tests.support.conformance import World, entra, signed
from tests.support.jwtkit import jwks, mint, rsa_key

CONTOSO = frozenset({"contoso"})


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    world = World()
    yield world
    world.close()


def _reason(world: World, token: str) -> Reason | None:
    try:
        world.verify(token, CONTOSO)
    except Rejection as rejection:
        return rejection.reason
    return None


def test_a_token_exactly_at_the_size_bound_is_checked_not_refused_for_size(world: World) -> None:
    assert MAX_TOKEN_CHARS == DEFAULT_MAX_TOKEN_BYTES  # contoso sets no max_token_bytes of its own
    token = signed(entra())
    at_bound = token + "A" * (MAX_TOKEN_CHARS - len(token))  # the same token, a longer (wrong) signature
    assert len(at_bound) == MAX_TOKEN_CHARS
    assert _reason(world, at_bound) is Reason.BAD_SIGNATURE
    assert _reason(world, at_bound + "A") is Reason.MALFORMED_TOKEN


def test_a_signature_that_is_not_base64_is_a_bad_signature(world: World) -> None:
    head, payload, _ = signed(entra()).split(".")
    assert _reason(world, f"{head}.{payload}.A") is Reason.BAD_SIGNATURE


def test_a_non_string_jti_is_malformed(world: World) -> None:
    assert _reason(world, signed(entra(jti=123))) is Reason.MALFORMED_TOKEN


def test_a_refusal_after_a_good_signature_is_given_again_as_it_was(world: World) -> None:
    token = signed(entra(aud="api://someone-else"))
    assert [_reason(world, token), _reason(world, token)] == [Reason.WRONG_AUDIENCE, Reason.WRONG_AUDIENCE]


def test_a_3072_bit_rsa_signature_ending_in_any_letter_verifies() -> None:
    """A 384-byte signature uses every bit of its last base64url character, so it can end in any letter; only `=`
    padding may be stripped from it."""
    key = rsa_key("entra-1", 3072)
    world = World()
    world.contoso.jwks = jwks(key)
    try:
        tokens = (mint(entra(n=n), key) for n in range(2000))
        token = next(token for token in tokens if token.endswith("X"))
        assert isinstance(world.verify(token, CONTOSO), Identity)
    finally:
        world.close()


def test_an_rsa_key_of_an_uncommon_size_verifies() -> None:
    """Keys from 2048 bits up are accepted whatever their size: a 2096-bit key's 262-byte signature is 350 base64url
    characters, which need two `=` of padding to decode."""
    key = rsa_key("entra-1", 2096)
    world = World()
    world.contoso.jwks = jwks(key)
    try:
        token = mint(entra(), key)
        assert len(token.rsplit(".", 1)[1]) == 350
        assert isinstance(world.verify(token, CONTOSO), Identity)
    finally:
        world.close()
