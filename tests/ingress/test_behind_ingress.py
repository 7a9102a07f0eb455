"""Forward-auth behind the real nginx (auth_request), Caddy (forward_auth) and Envoy (ext_authz), each configured with
its snippet of docs/forward-auth.md, and nginx configured as ingress-nginx configures itself from the guide's
annotations: the walk-through's answers, and no header a client adds gets a request further."""

from __future__ import annotations

import uuid
from typing import Final

import httpx
import pytest

from sidecar.demo.issuer import DemoIssuer
from tests.ingress.conftest import Reached, Stack
from tests.support.ingress_asks import SPELLINGS
from tests.support.metrics import rejections
from tests.support.people import LISA, TOM, bearer
from tests.support.rawhttp import exchange, request

Headers = list[tuple[str, str]]
PREFLIGHT: Final = [("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "POST")]


def call(stack: Stack, method: str, path: str, headers: Headers) -> tuple[httpx.Response, list[Reached]]:
    """One request through the ingress; what reached the application because of it (by a marker in the query)."""
    marker = uuid.uuid4().hex
    with httpx.Client(base_url=stack.ingress.url, timeout=30, trust_env=False) as http:
        response = http.request(method, f"{path}?m={marker}", headers=headers)
    return response, stack.app.reached(marker)


def admin(stack: Stack) -> httpx.Client:
    return httpx.Client(base_url=stack.sidecar.admin, timeout=30, trust_env=False)


def test_lisa_reaches_the_application_with_her_identity(stack: Stack, issuer: DemoIssuer) -> None:
    response, reached = call(stack, "POST", "/flows/payroll", bearer(issuer, LISA))
    assert response.status_code == 200, stack.ingress.output()
    assert len(reached) == 1
    assert (reached[0].method, reached[0].path) == ("POST", "/flows/payroll")
    assert reached[0].values("x-auth-user") == ["lisa@contoso.com"]
    assert reached[0].values("x-auth-subject") == [LISA["oid"]]


def test_without_a_token_it_is_401_with_the_challenge_and_the_application_is_not_called(stack: Stack) -> None:
    response, reached = call(stack, "POST", "/flows/payroll", [])
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == ['Bearer realm="ingress-realm"']
    assert reached == []


def test_a_caller_not_on_the_list_is_403_and_the_application_is_not_called(stack: Stack, issuer: DemoIssuer) -> None:
    response, reached = call(stack, "POST", "/flows/payroll", bearer(issuer, TOM))
    assert response.status_code == 403
    assert reached == []


def test_no_route_is_403_and_the_application_is_not_called(stack: Stack) -> None:
    response, reached = call(stack, "GET", "/nowhere", [])
    assert response.status_code == 403
    assert reached == []


def test_an_open_route_reaches_the_application_and_a_clients_identity_headers_never_do(stack: Stack) -> None:
    spoofed = [("X-Auth-User", "admin@contoso.com"), ("X-Auth-Subject", "admin"), ("X-Auth-Roles", "Admin")]
    response, reached = call(stack, "GET", "/public/x", spoofed)
    assert response.status_code == 200
    assert len(reached) == 1
    for name in ("x-auth-user", "x-auth-subject", "x-auth-roles"):
        assert reached[0].values(name) in ([], [""]), (name, reached[0].headers)


@pytest.mark.parametrize("spelling", ["X_Auth_User", "X-Auth_User", "X_Auth_Roles"])
def test_a_clients_identity_header_spelled_with_underscores_never_reaches_the_application(
    stack: Stack, spelling: str
) -> None:
    """The ingress overwrites X-Auth-User, not X_Auth_User, which PHP, uWSGI and older gunicorn and Puma read as the
    same header: nginx and Caddy drop it, and Envoy's snippet shows it to the sidecar, which refuses it (it went to
    the application before)."""
    response, reached = call(stack, "GET", "/public/x", [(spelling, "admin@contoso.com")])
    if response.status_code == 403:
        assert reached == []
        return
    assert response.status_code == 200
    assert [[v for name, v in seen.headers if "_" in name] for seen in reached] == [[]]


def test_an_allowed_preflight_reaches_the_application(stack: Stack) -> None:
    response, reached = call(stack, "OPTIONS", "/flows/browser", PREFLIGHT)
    assert response.status_code == 200
    assert [seen.method for seen in reached] == ["OPTIONS"]


@pytest.mark.parametrize(
    "target", ["/public/../flows/payroll", "/public/%2e%2e/flows/payroll", "/public//../flows/payroll"]
)
def test_dot_segments_are_decided_as_the_path_they_lead_to(stack: Stack, target: str) -> None:
    """The ingress passes the raw request URI (nginx $request_uri, Caddy {uri}, Envoy's path): the sidecar decides
    the path the dots lead to, never the open prefix they start with (sent raw: HTTP clients remove dot segments)."""
    marker = uuid.uuid4().hex
    response = request(stack.ingress.url, f"{target}?m={marker}".encode(), method=b"POST")
    assert response.status == 401  # /flows/payroll without a token
    assert stack.app.reached(marker) == []


@pytest.mark.parametrize("after", [b"#/../../flows/payroll", b"?x=1#/../../flows/payroll", b"#"])
def test_a_raw_hash_in_the_target_never_reaches_the_application(stack: Stack, after: bytes) -> None:
    """RFC 9112 has no fragment in a request target. nginx sends a raw `#` on to the application as it came (in
    X-Original-URI too), and an application reading it as a path character resolves `/public/m#/../../flows/payroll`
    to `/flows/payroll`: refused (403 invalid_path to nginx), never decided on the part before the `#`. Envoy refuses
    it itself (400); Caddy escapes one in the path (`%23`), so the sidecar decides, and the application gets, that."""
    marker = uuid.uuid4().hex
    target = b"/public/" + marker.encode() + after
    response = request(stack.ingress.url, target, method=b"POST")
    reached = stack.app.reached(marker)
    if stack.ingress.name == "caddy" and after == b"#":
        assert (response.status, [seen.path for seen in reached]) == (200, [target.decode()])
    else:
        assert response.status in (400, 401, 403), response.status
        assert reached == []


@pytest.mark.parametrize("host", [b"evil?", b"evil#", b"ev@il", b"gw.example/public/x?"])
def test_a_host_header_cannot_move_the_path(stack: Stack, host: bytes) -> None:
    """ingress-nginx builds X-Original-URL as $scheme://$http_host$request_uri: a Host ending in `?` or `#` would put
    the real path into the query or fragment. Refused, or decided on the real path; never reaches the application."""
    marker = uuid.uuid4().hex.encode()
    head = b"POST /flows/payroll?m=" + marker + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
    response = exchange(stack.ingress.url, head)
    assert response.status in (400, 401, 403), response.status
    assert stack.app.reached(marker.decode()) == []


# What each ingress does with a client's header of each spelling before it asks the sidecar (found by running them):
# "replaced" by its own value or not passed on ("dropped"), so the decision is the real request's (401 here); any
# other reaches the sidecar, which refuses it (403 forward_auth_spoofed).
NOT_PASSED: Final = {
    # proxy_set_header replaces its two; nginx drops header names with `_` (ignore_invalid_headers, the default).
    "nginx": {"X-Original-Uri", "X-Original-Method"} | {s for s in SPELLINGS if "_" in s},
    # The same, with ingress-nginx's two (its generated auth location, emulated on Debian's nginx).
    "ingress-nginx": {"X-Original-Url", "X-Original-Method"} | {s for s in SPELLINGS if "_" in s},
    # header_up sets its two; Caddy does not pass header names with `_` on to the auth service either.
    "caddy": {"X-Forwarded-Uri", "X-Forwarded-Method"} | {s for s in SPELLINGS if "_" in s},
    # Envoy sends only allowed_headers, which in the snippet name every spelling so that the sidecar refuses them
    # (left out, they went to the application instead).
    "envoy": set(),
}


def _expected(stack: Stack, spelling: str) -> tuple[int, str]:
    return (401, "missing_token") if spelling in NOT_PASSED[stack.ingress.name] else (403, "forward_auth_spoofed")


def _spoof(spelling: str) -> str:
    return "OPTIONS" if spelling.lower().endswith("method") else "/public/x"


@pytest.mark.parametrize("copies", [1, 2], ids=["once", "twice"])
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_client_header_naming_another_request_changes_nothing(stack: Stack, spelling: str, copies: int) -> None:
    """A tokenless POST to the protected route, claiming an open path or OPTIONS in a header of any spelling (once,
    or twice): never reaches the application; 401 as without the header, or 403 when the header reached the sidecar."""
    status, reason = _expected(stack, spelling)
    route = "payroll" if reason == "missing_token" else "(none)"
    with admin(stack) as metrics:
        before = rejections(metrics, route, reason)
        response, reached = call(stack, "POST", "/flows/payroll", [(spelling, _spoof(spelling))] * copies)
        assert (response.status_code, reached) == (status, [])
        assert rejections(metrics, route, reason) == before + 1


@pytest.mark.parametrize("spelling", [s for s in SPELLINGS if s.lower().endswith("method")])
def test_the_options_trick_does_not_make_a_post_a_preflight(stack: Stack, spelling: str) -> None:
    """A real POST dressed as a preflight (a method header saying OPTIONS, plus CORS preflight headers)."""
    status, _ = _expected(stack, spelling)
    response, reached = call(stack, "POST", "/flows/browser", [*PREFLIGHT, (spelling, "OPTIONS")])
    assert (response.status_code, reached) == (status, [])


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_an_allowed_call_is_decided_on_the_ingress_value_not_the_clients(
    stack: Stack, spelling: str, issuer: DemoIssuer
) -> None:
    """lisa's POST with a client header naming a path without a route, or GET: where the ingress replaces or drops
    the header, the answer is the real request's (200, reached); where it passes it on, 403 and not reached."""
    value = "GET" if spelling.lower().endswith("method") else "/nowhere"
    response, reached = call(stack, "POST", "/flows/payroll", [*bearer(issuer, LISA), (spelling, value)])
    if spelling in NOT_PASSED[stack.ingress.name]:
        assert (response.status_code, [seen.path for seen in reached]) == (200, ["/flows/payroll"])
    else:
        assert (response.status_code, reached) == (403, [])


# Headers by which an application runs another method or serves another path than the one decided (Symfony and
# Laravel read X-HTTP-Method-Override on a POST; IIS, Zend and old Symfony X-Original-URL and X-Rewrite-URL; PHP reads
# `_` as `-`). The proxy drops them; here the ingress forwards the request, so it must not carry them on.
OVERRIDES: Final = ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Rewrite-URL", "X_Rewrite_URL"]
# The known limit (SECURITY.md): ingress-nginx replaces its own two on the auth request only, and its annotations
# cannot remove a client's copies from the proxied request, so those reach the application as the client sent them.
REACH_THE_APPLICATION: Final = {"ingress-nginx": {"X-Original-Url", "X-Original-Method"}}


@pytest.mark.parametrize("spelling", [*SPELLINGS, *OVERRIDES])
def test_a_clients_override_or_original_header_never_reaches_the_application(
    stack: Stack, spelling: str, issuer: DemoIssuer
) -> None:
    """lisa's allowed POST carrying a client's method or URL header of any spelling: refused (403, the application
    not called), or it reaches the application without that header; never the decided request with the client's
    other method or path beside it (nginx replaced its X-Original-URI on the auth request only)."""
    value = "DELETE" if spelling.lower().endswith(("method", "override")) else "/nowhere"
    response, reached = call(stack, "POST", "/flows/payroll", [*bearer(issuer, LISA), (spelling, value)])
    if response.status_code == 403:
        assert reached == []
        return
    folded = spelling.lower().replace("_", "-")
    passed_on = [value] if spelling in REACH_THE_APPLICATION.get(stack.ingress.name, set()) else []
    assert response.status_code == 200, stack.ingress.output()
    assert [[v for name, v in seen.headers if name.replace("_", "-") == folded] for seen in reached] == [passed_on]


TRACE: Final = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT: Final = f"00-{TRACE}-00f067aa0ba902b7-01"


def test_one_trace_id_follows_the_call_from_the_ingress_through_the_sidecar_to_the_application(
    stack: Stack, issuer: DemoIssuer
) -> None:
    """The client's trace context reaches the application unchanged, and the sidecar's access line for the
    ingress's question carries its trace id: one id finds the call in the ingress, the sidecar and the flow."""
    traced = [("traceparent", TRACEPARENT), ("tracestate", "congo=t61rcWkgMzE"), ("X-Request-Id", "trace-ingress")]
    response, reached = call(stack, "POST", "/flows/payroll", [*bearer(issuer, LISA), *traced])
    assert response.status_code == 200, stack.ingress.output()
    assert len(reached) == 1
    assert reached[0].values("traceparent") == [TRACEPARENT]
    assert reached[0].values("tracestate") == ["congo=t61rcWkgMzE"]
    line = stack.sidecar.wait_for_log("request", forward_auth=True, trace_id=TRACE)
    assert line["route"] == "payroll" and line["status"] == 200
