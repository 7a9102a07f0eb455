"""CORS in-process: preflights answered by the gate without a token or the upstream (204, or 403 cors_refused), the
same through forward-auth (200), and the sidecar's Access-Control-* headers on refusals and forwarded answers."""

from __future__ import annotations

import json

import pytest

from sidecar.demo.issuer import DemoIssuer
from tests.edge.conftest import BuildEdge, Edge
from tests.support.asgi import call
from tests.support.logs import Records
from tests.support.people import LISA, bearer
from tests.support.rawupstream import RawUpstream

APP = "https://app.example.com"
Headers = list[tuple[str, str]]


def preflight(origin: str = APP, method: str = "POST", headers: str = "authorization, content-type") -> Headers:
    return [("Origin", origin), ("Access-Control-Request-Method", method), ("Access-Control-Request-Headers", headers)]


async def test_a_preflight_is_answered_without_a_token_and_without_the_upstream(
    edge: Edge, raw: RawUpstream, access_log: Records
) -> None:
    answer = await call(edge.app, "OPTIONS", "/flows/browser", preflight())
    assert (answer.status, answer.body) == (204, b"")
    assert answer.values("access-control-allow-origin") == [APP.encode()]
    assert answer.values("access-control-allow-methods") == [b"GET, POST"]
    (allowed,) = answer.values("access-control-allow-headers")
    assert {b"authorization", b"content-type"} <= set(allowed.split(b", "))
    assert answer.values("access-control-max-age") == [b"600"]
    assert answer.values("access-control-allow-credentials") == []
    assert b"Origin" in b", ".join(answer.values("vary"))
    assert not [seen for seen in raw.received if seen.path == "/browser" and seen.line.startswith(b"OPTIONS")]
    (line,) = access_log.fields()
    assert (line["decision"], line["cors"], line["status"], line["route"]) == ("preflight", "allowed", 204, "browser")


REFUSALS = {
    "origin-not-listed": (preflight(origin="https://evil.example"), "origin"),
    "header-not-allowed": (preflight(headers="authorization, x-secret-switch"), "headers"),
}


@pytest.mark.parametrize(("headers", "refused"), REFUSALS.values(), ids=REFUSALS.keys())
async def test_a_preflight_asking_for_what_the_route_does_not_allow_is_refused_counted_and_logged(
    edge: Edge, headers: Headers, refused: str, access_log: Records
) -> None:
    answer = await call(edge.app, "OPTIONS", "/flows/browser", headers)
    assert (answer.status, json.loads(answer.body)["reason"]) == (403, "cors_refused")
    assert answer.values("access-control-allow-origin") == []
    assert answer.values("vary") == [b"Origin"]
    assert edge.rejections("browser", "cors_refused") == 1
    (line,) = access_log.fields()
    assert (line["decision"], line["reason"], line["cors"], line["status"]) == ("reject", "cors_refused", refused, 403)


async def test_a_preflight_for_a_route_without_cors_is_an_ordinary_request(edge: Edge) -> None:
    answer = await call(edge.app, "OPTIONS", "/flows/limited", preflight())
    assert answer.status == 405  # the route takes POST only, and does not answer preflights
    assert answer.values("access-control-allow-origin") == []


async def test_an_actual_request_still_needs_a_token_and_the_page_can_read_the_401(edge: Edge) -> None:
    answer = await call(edge.app, "POST", "/flows/browser", [("Origin", APP)])
    assert answer.status == 401
    assert answer.values("access-control-allow-origin") == [APP.encode()]
    (exposed,) = answer.values("access-control-expose-headers")
    assert b"www-authenticate" in exposed
    assert answer.values("www-authenticate") == [b'Bearer realm="edge-realm"']


async def test_another_origin_gets_no_cors_headers_on_the_401(edge: Edge) -> None:
    answer = await call(edge.app, "POST", "/flows/browser", [("Origin", "https://evil.example")])
    assert (answer.status, answer.values("access-control-allow-origin"), answer.values("vary")) == (
        401,
        [],
        [b"Origin"],
    )


async def test_an_allowed_answer_carries_the_sidecars_cors_headers_only(
    edge: Edge, raw: RawUpstream, issuer: DemoIssuer
) -> None:
    raw.answers["/browser"] = lambda _r: (
        b"HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\n"
        b'X-Flow-Run: 42\r\nContent-Length: 12\r\n\r\n{"ran":true}'
    )
    answer = await call(edge.app, "POST", "/flows/browser", [("Origin", APP), *bearer(issuer, LISA)])
    assert (answer.status, answer.body) == (200, b'{"ran":true}')
    assert answer.values("access-control-allow-origin") == [APP.encode()]  # the upstream's "*" is dropped
    assert answer.values("access-control-allow-credentials") == []
    assert answer.values("access-control-expose-headers") == [b"x-flow-run"]
    assert answer.values("x-flow-run") == [b"42"]


FORWARD_AUTH = {"allowed": (APP, 200, None), "origin-not-listed": ("https://evil.example", 403, "cors_refused")}


@pytest.mark.parametrize(("origin", "status", "reason"), FORWARD_AUTH.values(), ids=FORWARD_AUTH)
async def test_forward_auth_lets_allowed_preflights_through_without_a_token(
    make_edge: BuildEdge, origin: str, status: int, reason: str | None, access_log: Records
) -> None:
    edge = await make_edge(ingress="nginx")
    asked = [("X-Original-URI", "/flows/browser"), ("X-Original-Method", "OPTIONS"), *preflight(origin=origin)]
    answer = await call(edge.app, "GET", "/_auth", asked)
    assert answer.status == status
    assert answer.values("x-auth-subject") == []
    if reason is not None:
        assert json.loads(answer.body)["reason"] == reason
    else:
        assert (answer.body, answer.values("content-length")) == (b"", [b"0"])
    (line,) = access_log.fields()
    assert line["forward_auth"] is True


async def test_a_preflight_with_conflicting_framing_is_not_answered_as_one(edge: Edge) -> None:
    headers = [*preflight(), ("Content-Length", "0"), ("Transfer-Encoding", "chunked")]
    answer = await call(edge.app, "OPTIONS", "/flows/browser", headers)
    assert (answer.status, json.loads(answer.body)["reason"]) == (400, "conflicting_headers")
