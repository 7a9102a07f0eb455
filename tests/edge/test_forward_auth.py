"""The forward-auth endpoint in-process, asked as each ingress asks (tests/support/ingress_asks.py): the yes/no answer
and identity headers, refusals an ingress understands (only 401 and 403), spoofed originals, rate limits and audit."""

from __future__ import annotations

import json

import pytest

from sidecar.demo.issuer import DemoIssuer
from tests.edge.conftest import BuildEdge, Edge
from tests.support.asgi import Answer, call
from tests.support.ingress_asks import INGRESSES, SPELLINGS, Headers
from tests.support.logs import Records
from tests.support.people import LISA, TOM, bearer


async def ask(
    edge: Edge, ingress: str, method: str, uri: str, extra: Headers | None = None, peer: str = "127.0.0.1"
) -> Answer:
    """The auth request `ingress` makes about (method, uri), from the ingress at `peer`."""
    auth_method, path, headers = INGRESSES[ingress](method, uri)
    return await call(edge.app, auth_method, path, [*headers, *(extra or [])], client=(peer, 40000))


@pytest.fixture(params=list(INGRESSES))
async def asked(request: pytest.FixtureRequest, make_edge: BuildEdge) -> tuple[str, Edge]:
    ingress: str = request.param
    return ingress, await make_edge(ingress=ingress)


async def test_an_allowed_caller_gets_200_with_identity_headers(asked: tuple[str, Edge], issuer: DemoIssuer) -> None:
    ingress, edge = asked
    answer = await ask(edge, ingress, "POST", "/flows/payroll?api=1", bearer(issuer, LISA))
    assert (answer.status, answer.body) == (200, b"")
    assert answer.values("x-auth-user") == [b"lisa@contoso.com"]
    assert answer.values("x-auth-subject") == [LISA["oid"].encode()]
    assert answer.values("x-auth-provider") == [b"contoso"]
    assert answer.values("x-auth-roles") == [b""]  # sent empty: the ingress overwrites a client's copy
    assert answer.values("cache-control") == [b"no-store"]
    assert edge.sample("sidecar_requests_total", route="payroll", method="POST", code="200") == 1


async def test_refusals_are_401_or_403_only(asked: tuple[str, Edge], issuer: DemoIssuer) -> None:
    """nginx auth_request understands only 2xx, 401 and 403: every other refusal is a 403 with its own reason."""
    ingress, edge = asked
    cases = [
        ("POST", "/flows/payroll", [], 401, "missing_token"),
        ("POST", "/flows/payroll", bearer(issuer, TOM), 403, "not_allowed"),
        ("GET", "/nowhere", [], 403, "no_route"),
        ("GET", "/flows/payroll", [], 403, "method_not_allowed"),
    ]
    for method, uri, headers, status, reason in cases:
        answer = await ask(edge, ingress, method, uri, headers)
        body = json.loads(answer.body)
        assert (answer.status, body["status"], body["reason"]) == (status, status, reason), uri
        assert answer.values("x-auth-user") == []
    challenge = (await ask(edge, ingress, "POST", "/flows/payroll")).values("www-authenticate")
    assert challenge == [b'Bearer realm="edge-realm"']


async def test_an_open_route_is_200_without_a_token(asked: tuple[str, Edge]) -> None:
    ingress, edge = asked
    assert (await ask(edge, ingress, "GET", "/public/x")).status == 200


async def test_the_same_normalisation_applies(asked: tuple[str, Edge], issuer: DemoIssuer) -> None:
    ingress, edge = asked
    answer = await ask(edge, ingress, "POST", "/public/../flows/payroll", bearer(issuer, TOM))
    assert answer.status == 403  # decided as /flows/payroll, not as the open /public/ prefix


@pytest.mark.parametrize("spelling", SPELLINGS)
async def test_an_original_header_the_ingress_does_not_set_is_refused(
    spelling: str, asked: tuple[str, Edge], issuer: DemoIssuer, access_log: Records
) -> None:
    ingress, edge = asked
    auth_method, path, headers = INGRESSES[ingress]("POST", "/flows/payroll")
    if spelling.lower() in {name.lower() for name, _ in headers}:
        spoof = [(spelling, headers[[n.lower() for n, _ in headers].index(spelling.lower())][1])]  # a second copy
    else:
        spoof = [(spelling, "OPTIONS" if spelling.lower().endswith("method") else "/public/x")]
    for sent in ([*spoof, *headers], [*headers, *spoof, *bearer(issuer, LISA)]):
        answer = await call(edge.app, auth_method, path, sent)
        assert (answer.status, json.loads(answer.body)["reason"]) == (403, "forward_auth_spoofed")
        assert answer.values("x-auth-user") == []
    assert edge.rejections("(none)", "forward_auth_spoofed") == 2
    assert all(line["forward_auth"] is True and line.get("path") is None for line in access_log.fields())


@pytest.mark.parametrize("ingress", ["nginx", "ingress-nginx", "traefik"])
async def test_a_request_that_names_no_original_is_refused(ingress: str, make_edge: BuildEdge) -> None:
    edge = await make_edge(ingress=ingress)
    answer = await call(edge.app, "GET", "/_auth")
    assert (answer.status, json.loads(answer.body)["reason"]) == (403, "invalid_path")


@pytest.mark.parametrize("url", ["https://evil?/public/x", "https://ev@il/public/x", "ftp://gw/public/x", "https://gw"])
async def test_an_original_url_that_is_not_a_plain_url_is_refused(url: str, make_edge: BuildEdge) -> None:
    edge = await make_edge(ingress="ingress-nginx")
    answer = await call(edge.app, "GET", "/_auth", [("X-Original-URL", url), ("X-Original-Method", "GET")])
    assert (answer.status, json.loads(answer.body)["reason"]) == (403, "invalid_path")


async def test_envoy_asks_under_the_prefix_only(make_edge: BuildEdge) -> None:
    edge = await make_edge(ingress="envoy")
    assert (await call(edge.app, "GET", "/_auth/public/x")).status == 200
    outside = await call(edge.app, "GET", "/_authpublic/x")  # not under the endpoint: the gate's own 404
    assert (outside.status, json.loads(outside.body)["reason"]) == (404, "no_route")


async def test_the_rate_limit_counts_and_refuses_with_403(make_edge: BuildEdge, issuer: DemoIssuer) -> None:
    edge = await make_edge(ingress="nginx")
    token = bearer(issuer, LISA)
    first = await ask(edge, "nginx", "POST", "/flows/limited", token)
    second = await ask(edge, "nginx", "POST", "/flows/limited", token)
    assert (first.status, second.status, json.loads(second.body)["reason"]) == (200, 403, "rate_limited")
    assert [int(value) > 0 for value in second.values("retry-after")] == [True]


async def test_audit_mode_says_yes_and_counts_the_would_be_refusal(
    make_edge: BuildEdge, issuer: DemoIssuer, access_log: Records
) -> None:
    edge = await make_edge(ingress="nginx")
    answer = await ask(edge, "nginx", "POST", "/flows/audited", bearer(issuer, TOM))
    assert answer.status == 200 and answer.values("x-auth-user") == [b"tom@contoso.com"]
    assert edge.rejections("audited", "not_allowed", mode="audit") == 1
    (line,) = access_log.fields()
    assert (line["decision"], line["forward_auth"], line["status"]) == ("audit_forward", True, 200)


async def test_the_client_behind_a_trusted_ingress_is_logged(make_edge: BuildEdge, access_log: Records) -> None:
    edge = await make_edge(ingress="nginx")
    forwarded = [("X-Forwarded-For", "203.0.113.7")]
    await ask(edge, "nginx", "GET", "/public/x", forwarded, peer="10.0.0.5")
    await ask(edge, "nginx", "GET", "/public/x", forwarded, peer="192.0.2.1")  # not a trusted proxy
    assert [line["client_ip"] for line in access_log.fields()] == ["203.0.113.7", "192.0.2.1"]
