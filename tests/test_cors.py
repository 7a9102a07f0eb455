"""CORS decisions (pure): origins as browsers write them, which preflights a route allows, which route owns a
preflight, and the Access-Control-* headers of preflight answers, forwarded answers and refusals."""

from __future__ import annotations

import pytest

from sidecar.policy.cors import (
    SAFELISTED_HEADERS,
    PreflightRequest,
    normalise_origin,
    preflight_failure,
    preflight_headers,
    preflight_request,
    preflight_route,
    response_headers,
)
from sidecar.policy.model import AllowRule, Cors, Match, Route
from sidecar.policy.routes import RouteTable

APP = "https://app.example.com"


def cors(
    origins: tuple[str, ...] = (APP,),
    methods: frozenset[str] | None = frozenset({"GET", "POST"}),
    headers: tuple[str, ...] = ("authorization",),
    expose: tuple[str, ...] = (),
    credentials: bool = False,
) -> Cors:
    any_origin = origins == ("*",)
    return Cors(
        origins=frozenset() if any_origin else frozenset(origins),
        any_origin=any_origin,
        methods=methods,
        headers=SAFELISTED_HEADERS | set(headers),
        expose_headers=expose,
        max_age=600,
        credentials=credentials,
    )


def asked(origin: str = APP, method: str = "POST", *headers: str) -> PreflightRequest:
    return PreflightRequest(origin, method, headers)


ORIGINS = {
    "lower-cased": ("HTTPS://App.Example.COM", "https://app.example.com"),
    "default-https-port-dropped": ("https://app.example.com:443", "https://app.example.com"),
    "default-http-port-dropped": ("http://app.example.com:80", "http://app.example.com"),
    "other-port-kept": ("http://localhost:3000", "http://localhost:3000"),
    "https-on-80-kept": ("https://app.example.com:80", "https://app.example.com:80"),
    "ipv6-in-brackets": ("http://[::1]:8080", "http://[::1]:8080"),
    "every-origin": ("*", "*"),
}


@pytest.mark.parametrize(("written", "origin"), ORIGINS.values(), ids=ORIGINS.keys())
def test_origins_are_kept_as_browsers_send_them(written: str, origin: str) -> None:
    assert normalise_origin(written) == origin


NOT_ORIGINS = {
    "trailing-slash": ("https://app.example.com/", "no path"),
    "path": ("https://app.example.com/app", "no path"),
    "query": ("https://app.example.com?x=1", "no path"),
    "fragment": ("https://app.example.com#x", "no path"),
    "user": ("https://me@app.example.com", "no path"),
    "no-scheme": ("app.example.com", "must be an origin"),
    "scheme-relative": ("//app.example.com", "must be an origin"),
    "no-host": ("https://", "must be an origin"),
    "bad-port": ("https://app.example.com:99999", "invalid port"),
    "null": ("null", "sandboxed pages"),
    "wildcard-host": ("https://*.example.com", "wildcard hosts"),
    "unicode-host": ("https://bücher.example", "xn--"),
    "space": ("https://app .example.com", "without spaces"),
}


@pytest.mark.parametrize(("written", "message"), NOT_ORIGINS.values(), ids=NOT_ORIGINS.keys())
def test_anything_but_an_origin_is_refused(written: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalise_origin(written)


PREFLIGHT = [(b"origin", APP.encode()), (b"access-control-request-method", b"POST")]
REQUESTS = {
    "preflight": ("OPTIONS", PREFLIGHT, asked()),
    "with-requested-headers": (
        "OPTIONS",
        [*PREFLIGHT, (b"access-control-request-headers", b"Authorization, X-Trace,,content-type")],
        asked(APP, "POST", "authorization", "x-trace", "content-type"),
    ),
    "not-options": ("POST", PREFLIGHT, None),
    "options-without-origin": ("OPTIONS", PREFLIGHT[1:], None),
    "options-without-requested-method": ("OPTIONS", PREFLIGHT[:1], None),
    "empty-requested-method": ("OPTIONS", [PREFLIGHT[0], (b"access-control-request-method", b" ")], None),
}


@pytest.mark.parametrize(("method", "headers", "request_"), REQUESTS.values(), ids=REQUESTS.keys())
def test_a_preflight_is_options_with_origin_and_requested_method(
    method: str, headers: list[tuple[bytes, bytes]], request_: PreflightRequest | None
) -> None:
    assert preflight_request(method, headers) == request_


FAILURES = {
    "allowed": (cors(), asked(APP, "POST", "authorization"), None),
    "safelisted-headers-always-allowed": (cors(), asked(APP, "GET", "content-type", "accept"), None),
    "origin-not-listed": (cors(), asked("https://evil.example"), "origin"),
    "origin-differs-by-port": (cors(), asked("https://app.example.com:8443"), "origin"),
    "origin-differs-by-scheme": (cors(), asked("http://app.example.com"), "origin"),
    "every-origin": (cors(("*",)), asked("https://anyone.example"), None),
    "method-not-listed": (cors(methods=frozenset({"GET"})), asked(APP, "POST"), "method"),
    "every-method-of-the-route": (cors(methods=None), asked(APP, "DELETE"), None),
    "header-not-listed": (cors(), asked(APP, "POST", "authorization", "x-trace"), "headers"),
    "authorization-only-when-listed": (cors(headers=()), asked(APP, "POST", "authorization"), "headers"),
}


@pytest.mark.parametrize(("settings", "request_", "failure"), FAILURES.values(), ids=FAILURES.keys())
def test_what_a_preflight_may_ask_for(settings: Cors, request_: PreflightRequest, failure: str | None) -> None:
    assert preflight_failure(settings, request_) == failure


def test_an_allowed_preflight_names_the_origin_never_a_wildcard() -> None:
    headers = dict(preflight_headers(cors(("*",), credentials=False), asked("https://anyone.example")))
    assert headers[b"access-control-allow-origin"] == b"https://anyone.example"
    assert headers[b"access-control-allow-methods"] == b"GET, POST"
    assert (
        headers[b"access-control-allow-headers"] == b"accept, accept-language, authorization, content-language, "
        b"content-type"
    )
    assert headers[b"access-control-max-age"] == b"600"
    assert b"Origin" in headers[b"vary"]
    assert b"access-control-allow-credentials" not in headers


def test_a_route_taking_every_method_allows_the_one_asked_for() -> None:
    headers = dict(preflight_headers(cors(methods=None, credentials=True), asked(APP, "PATCH")))
    assert headers[b"access-control-allow-methods"] == b"PATCH"
    assert headers[b"access-control-allow-credentials"] == b"true"


ANSWERS = {
    "no-origin": (cors(), None, "GET", False, {b"vary": b"Origin"}),
    "origin-not-allowed": (cors(), "https://evil.example", "GET", False, {b"vary": b"Origin"}),
    "method-not-allowed": (cors(methods=frozenset({"GET"})), APP, "POST", False, {b"vary": b"Origin"}),
    "allowed": (cors(), APP, "GET", False, {b"vary": b"Origin", b"access-control-allow-origin": APP.encode()}),
    "credentials-and-exposed": (
        cors(credentials=True, expose=("x-flow-run",)),
        APP,
        "POST",
        False,
        {
            b"vary": b"Origin",
            b"access-control-allow-origin": APP.encode(),
            b"access-control-allow-credentials": b"true",
            b"access-control-expose-headers": b"x-flow-run",
        },
    ),
    "refusal-exposes-challenge-and-wait": (
        cors(),
        APP,
        "POST",
        True,
        {
            b"vary": b"Origin",
            b"access-control-allow-origin": APP.encode(),
            b"access-control-expose-headers": b"www-authenticate, retry-after, x-request-id",
        },
    ),
}


@pytest.mark.parametrize(("settings", "origin", "method", "refusal", "headers"), ANSWERS.values(), ids=ANSWERS.keys())
def test_answers_carry_cors_headers_only_for_allowed_origins(
    settings: Cors, origin: str | None, method: str, refusal: bool, headers: dict[bytes, bytes]
) -> None:
    assert dict(response_headers(settings, origin, method, refusal)) == headers


def _route(name: str, methods: set[str], settings: Cors | None) -> Route:
    match = Match(path="/flows/run", methods=frozenset(methods))
    return Route(name, match, "https://up.test/", (AllowRule("p"),), cors=settings)


TABLE = RouteTable.build(
    [
        _route("read", {"GET"}, cors()),
        _route("write", {"POST"}, None),
        _route("remove", {"DELETE"}, cors(methods=frozenset({"DELETE"}))),
    ]
)
OWNERS = {
    "route-of-requested-method-has-cors": ("/flows/run", "GET", "read"),
    "another-route-of-the-path-has-cors": ("/flows/run", "DELETE", "remove"),
    "route-of-requested-method-without-cors": ("/flows/run", "POST", None),
    "no-route-takes-the-method": ("/flows/run", "PUT", None),
    "no-route-for-the-path": ("/elsewhere", "GET", None),
}


@pytest.mark.parametrize(("path", "method", "owner"), OWNERS.values(), ids=OWNERS.keys())
def test_a_preflight_belongs_to_the_route_of_the_requested_method(path: str, method: str, owner: str | None) -> None:
    """None of these routes takes OPTIONS: the preflight is matched by the method the page will use."""
    route = preflight_route(TABLE, path, asked(APP, method))
    assert (route.name if route is not None else None) == owner
