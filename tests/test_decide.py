"""`decide()` as the proxy, forward-auth and `sidecar explain` read it: the normalised path, the route and the rest of
a prefix route's path, the methods for 405's `Allow`, the mode, and the time spent on the token, on every outcome."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from sidecar.auth.steps import Step
from sidecar.edge.decide import Decision, decide
from sidecar.edge.runtime import Snapshot
from sidecar.policy.load import parse_policy
from sidecar.policy.model import Mode
from sidecar.reasons import Reason
from tests.support.conformance import OID, POLICY, World, entra, signed

# The conformance policy, plus a prefix route and an audit-mode route (decide's other branches).
EXTRA_ROUTES = """\
  - {name: api, match: {path_prefix: /api/, methods: [GET]}, upstream: 'https://up.test/', allow: anyone}
  - name: audited
    match: {path: /audited}
    upstream: https://up.test/
    mode: audit
    allow: [{provider: contoso, users: [nobody]}]
"""


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    world = World()
    policy = parse_policy(POLICY + EXTRA_ROUTES, "decide.yaml", {})
    world.snapshot = Snapshot(policy, world.snapshot.verifier, "test")
    yield world
    world.close()


def _decide(world: World, method: str, path: bytes, token: str | None = None, **options: Any) -> Decision:
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    return world.run(decide(world.snapshot, method, path, headers, **options))


def _summary(decision: Decision) -> tuple[object, ...]:
    route = decision.route.name if decision.route is not None else None
    return decision.path, route, decision.rest, decision.reason, decision.allow, decision.mode


OUTCOMES = {
    # method, raw path -> normalised path, route, rest, reason, Allow, mode
    "a-path-refused-has-no-path": ("GET", b"/a%2fb", (None, None, "", Reason.INVALID_PATH, (), Mode.ENFORCE)),
    "no-route-keeps-the-normalised-path": (
        "GET",
        b"/nowhere/./x",
        ("/nowhere/x", None, "", Reason.NO_ROUTE, (), Mode.ENFORCE),
    ),
    "wrong-method-names-the-allowed-ones": (
        "POST",
        b"/methods",
        ("/methods", None, "", Reason.METHOD_NOT_ALLOWED, ("GET",), Mode.ENFORCE),
    ),
    "the-method-decides-on-a-method-route": ("GET", b"/methods", ("/methods", "methods", "", None, (), Mode.ENFORCE)),
    "a-prefix-route-gets-the-rest": ("GET", b"/api//v1/x", ("/api/v1/x", "api", "/v1/x", None, (), Mode.ENFORCE)),
    "a-route-without-token-is-refused": ("GET", b"/any", ("/any", "any", "", Reason.MISSING_TOKEN, (), Mode.ENFORCE)),
    "an-audit-route-says-so": ("GET", b"/audited", ("/audited", "audited", "", Reason.MISSING_TOKEN, (), Mode.AUDIT)),
}  # fmt: skip


@pytest.mark.parametrize(("method", "raw", "expected"), OUTCOMES.values(), ids=OUTCOMES.keys())
def test_every_outcome_carries_what_the_gate_reports(
    method: str, raw: bytes, expected: tuple[object, ...], world: World
) -> None:
    assert _summary(_decide(world, method, raw)) == expected


def test_an_enforced_route_is_audited_only_when_everything_is() -> None:
    with_world = World()
    try:
        enforced = with_world.run(decide(with_world.snapshot, "GET", b"/any", []))
        audited = with_world.run(decide(with_world.snapshot, "GET", b"/any", [], audit_all=True))
    finally:
        with_world.close()
    assert (enforced.mode, enforced.forwarded) == (Mode.ENFORCE, False)
    assert (audited.mode, audited.forwarded) == (Mode.AUDIT, True)


def test_a_verified_caller_no_rule_allows_is_refused_with_its_identity(world: World) -> None:
    decision = _decide(world, "GET", b"/users", signed(entra(oid="someone-else")))
    assert (decision.reason, decision.identity is not None) == (Reason.NOT_ALLOWED, True)


def test_time_on_the_token_is_within_the_call(world: World) -> None:
    token = signed(entra())
    started = time.perf_counter()
    decision = _decide(world, "GET", b"/any", token)
    took = time.perf_counter() - started
    assert decision.reason is None
    assert 0.0 < decision.auth_seconds <= took


def test_an_open_route_reports_the_mode_it_runs_in(world: World) -> None:
    """`allow: anyone` decides nothing about the caller, but the access log's `mode` and `sidecar explain` still say
    whether the route runs audited (here: everything audited, `--audit-all`)."""
    enforced = _decide(world, "GET", b"/api/x")
    audited = _decide(world, "GET", b"/api/x", audit_all=True)
    assert _summary(enforced) == ("/api/x", "api", "/x", None, (), Mode.ENFORCE)
    assert _summary(audited) == ("/api/x", "api", "/x", None, (), Mode.AUDIT)


def test_hand_written_claims_are_decided_as_a_token_with_them_would_be(world: World) -> None:
    """`sidecar explain --claims` and `sidecar test` pass claims instead of a token: the same rules decide."""
    allowed = _decide(world, "GET", b"/users", claims=entra())
    refused = _decide(world, "GET", b"/users", claims=entra(oid="someone-else"))
    assert (allowed.reason, allowed.identity is not None and allowed.identity.claims["oid"]) == (None, OID)
    assert (refused.reason, refused.identity is not None) == (Reason.NOT_ALLOWED, True)
    assert _decide(world, "GET", b"/users", claims=entra(iss="https://elsewhere.test")).reason == Reason.WRONG_ISSUER


@pytest.mark.parametrize("by", ["token", "claims"])
def test_the_steps_of_verification_are_recorded_when_asked_for(by: str, world: World) -> None:
    """`sidecar explain` passes a trace and prints each check of the token (or of hand-written claims) from it."""
    trace: list[Step] = []
    if by == "token":
        # a token of its own: one verified before is a cache hit, whose trace is short
        decision = _decide(world, "GET", b"/users", signed(entra(jti="traced")), trace=trace)
    else:
        decision = _decide(world, "GET", b"/users", claims=entra(), trace=trace)
    assert decision.reason is None
    assert trace and all(step.ok for step in trace)
    assert "issuer" in [step.name for step in trace]
