"""Admission per route: a declared body over max_body is refused before anything else; past max_concurrent a
request is shed at once; each admitted request gives its slot back (pure, per worker)."""

from __future__ import annotations

import pytest

from sidecar.edge.admission import Admission, conflict, limit_headers
from sidecar.edge.head import Head
from sidecar.policy.model import ANYONE, Match, Route
from sidecar.reasons import Reason


def _route(name: str = "r", max_body: int | None = 100, max_concurrent: int | None = 2) -> Route:
    return Route(name, Match(path="/r"), "http://up", ANYONE, max_body=max_body, max_concurrent=max_concurrent)


BODIES = {
    "no-body": (Head(), None),
    "at-max-body": (Head(content_length=100), None),
    "over-max-body": (Head(content_length=101), Reason.BODY_TOO_LARGE),
    "chunked-is-counted-while-streaming": (Head(chunked=True), None),
}


@pytest.mark.parametrize(("head", "reason"), BODIES.values(), ids=BODIES.keys())
def test_a_declared_body_over_max_body_is_refused(head: Head, reason: Reason | None) -> None:
    assert Admission().admit(_route(), head) == reason


def test_unlimited_body() -> None:
    assert Admission().admit(_route(max_body=None), Head(content_length=10**12)) is None


def test_past_max_concurrent_requests_are_shed_until_a_slot_is_given_back() -> None:
    admission, route, other = Admission(), _route(), _route("other")
    assert [admission.admit(route, Head()) for _ in range(3)] == [None, None, Reason.OVERLOADED]
    assert admission.admit(other, Head()) is None  # each route has its own bound
    admission.release(route)
    assert admission.admit(route, Head()) is None
    assert admission.in_flight("r") == 2


def test_a_refused_body_takes_no_slot() -> None:
    admission = Admission()
    assert admission.admit(_route(max_concurrent=1), Head(content_length=500)) is Reason.BODY_TOO_LARGE
    assert admission.in_flight("r") == 0


def test_unlimited_concurrency() -> None:
    admission, route = Admission(), _route(max_concurrent=None)
    assert all(admission.admit(route, Head()) is None for _ in range(1000))


def test_refusal_extras() -> None:
    assert limit_headers(Reason.OVERLOADED) == ((b"retry-after", b"1"),)
    assert limit_headers(Reason.BODY_TOO_LARGE) == ((b"connection", b"close"),)
    assert limit_headers(Reason.NOT_ALLOWED) == ()
    assert conflict(Head()) is None
    refused = conflict(Head(conflict=True))
    assert refused is not None and refused.reason is Reason.CONFLICTING_HEADERS and not refused.forwarded
