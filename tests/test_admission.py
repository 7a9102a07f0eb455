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


def _query_route(forward_query: bool = True) -> Route:
    return Route("q", Match(path="/q"), "http://up", ANYONE, forward_query=forward_query, max_query_params=3)


QUERIES = {
    "none": (b"", None),
    "at-the-cap": (b"a=1&b=2;c=3", None),
    "over-the-cap": (b"a=1&b=2&c=3&d=4", Reason.TOO_MANY_QUERY_PARAMS),
    "empty-pairs-count": (b"a&&&", Reason.TOO_MANY_QUERY_PARAMS),
    "a-semicolon-counts": (b"a=1&b=2;c=3;d", Reason.TOO_MANY_QUERY_PARAMS),
    "an-encoded-separator-counts": (b"a=1&b=2&c=%26d", Reason.TOO_MANY_QUERY_PARAMS),
    "other-escapes-do-not": (b"a=%E4%B8%AD&b=%2F%41&c=%uFF06", None),
}


@pytest.mark.parametrize(("query", "reason"), QUERIES.values(), ids=QUERIES.keys())
def test_a_query_over_max_query_params_is_refused(query: bytes, reason: Reason | None) -> None:
    assert Admission().admit(_query_route(), Head(), query) == reason


def test_a_route_that_forwards_no_query_takes_any() -> None:
    assert Admission().admit(_query_route(forward_query=False), Head(), b"a&" * 5000) is None


def test_a_refused_query_takes_no_slot() -> None:
    admission = Admission()
    assert admission.admit(_query_route(), Head(), b"a&b&c&d") is Reason.TOO_MANY_QUERY_PARAMS
    assert admission.in_flight("q") == 0
