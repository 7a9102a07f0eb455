"""Property tests: whatever string arrives as a bearer token, verification answers with an Identity or a typed
Rejection, never anything else (no crash, no foreign exception, no hang), and a mutated token never verifies as
someone else.

Examples are derandomised (the same every run) and no database is written, so a run is reproducible in CI.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar.policy.model import Identity
from sidecar.reasons import Rejection
from tests.support.conformance import World, entra, signed
from tests.support.examples import examples

SETTINGS = settings(
    max_examples=examples(400),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JWT_ONLY = frozenset({"contoso", "partner"})
EVERY = frozenset({"contoso", "partner", "opaque"})  # with an introspection provider: opaque tokens are asked about
GOOD = signed(entra())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
header_values = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "ES256", "none", "HS256", "PS256", "rs256"]) | json_values,
        "kid": st.sampled_from(["entra-1", "../x", ""]) | json_values,
        "typ": st.sampled_from(["JWT", "at+jwt"]) | json_values,
        "crit": json_values,
        "jku": json_values,
    },
)
payload_values = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from(["http://127.0.0.1:9400/11111111-2222-3333-4444-555555555555/v2.0"]) | json_values,
        "aud": json_values,
        "exp": json_values,
        "nbf": json_values,
        "iat": json_values,
        "tid": json_values,
    },
)


def segment(value: Any) -> str:
    raw = json.dumps(value, allow_nan=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    world = World()
    yield world
    world.close()


def outcome(world: World, token: str, providers: frozenset[str]) -> object:
    """What verification answered: an Identity or a Rejection. Anything else propagates and fails the test."""
    try:
        return world.verify(token, providers)
    except Rejection as rejection:
        return rejection


@SETTINGS
@given(token=st.text(max_size=300))
def test_any_text_gets_a_typed_answer(world: World, token: str) -> None:
    for providers in (JWT_ONLY, EVERY):
        assert isinstance(outcome(world, token, providers), Rejection | Identity)


@SETTINGS
@given(token=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=", max_size=400))
def test_any_base64url_shaped_text_gets_a_typed_answer(world: World, token: str) -> None:
    assert isinstance(outcome(world, token, JWT_ONLY), Rejection | Identity)


@SETTINGS
@given(header=header_values, payload=payload_values, signature=st.binary(max_size=300))
def test_any_header_and_payload_get_a_typed_answer(
    world: World, header: dict[str, Any], payload: dict[str, Any], signature: bytes
) -> None:
    signed_part = base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    token = f"{segment(header)}.{segment(payload)}.{signed_part}"
    assert isinstance(outcome(world, token, JWT_ONLY), Rejection)  # never a valid identity without the key


@SETTINGS
@given(position=st.integers(min_value=0, max_value=len(GOOD) - 1), replacement=st.characters(max_codepoint=0x7F))
def test_a_mutated_token_is_refused_or_still_the_same_caller(world: World, position: int, replacement: str) -> None:
    mutated = GOOD[:position] + replacement + GOOD[position + 1 :]
    answer = outcome(world, mutated, JWT_ONLY)
    if isinstance(answer, Identity):  # only a change the encoding ignores (e.g. a signature's spare bits)
        original = outcome(world, GOOD, JWT_ONLY)
        assert isinstance(original, Identity) and dict(answer.claims) == dict(original.claims)
    else:
        assert isinstance(answer, Rejection)
