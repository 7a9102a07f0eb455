"""Rate limits per caller and CORS through a real sidecar process, in front of the demo issuer and an upstream that
records every request it gets (and sets its own Access-Control-Allow-Origin, which the sidecar must replace)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, FABRIKAM_TENANT, DemoIssuer
from tests.support.metrics import rejections
from tests.support.servers import SidecarProcess, ThreadServer, served

APP = "https://app.example.com"
POLICY = """\
version: 1
realm: test-realm
trusted_proxies: [127.0.0.1/32]  # the tests play the ingress: its X-Forwarded-For names the client
providers:
  contoso:
    issuer: ${ISSUER}/11111111-2222-3333-4444-555555555555/v2.0
    audiences: [api://trigger-gateway]
  fabrikam:
    issuer: ${ISSUER}/99999999-8888-7777-6666-555555555555/v2.0
    audiences: [api://trigger-gateway]
routes:
  - name: limited
    match: { path: /flows/limited, methods: [POST] }
    upstream: ${UPSTREAM}/limited
    allow: [{ provider: contoso }]
    rate_limit: { per: subject, requests: 3, window: 1h }
  - name: limited-ip
    match: { path: /flows/limited-ip, methods: [POST] }
    upstream: ${UPSTREAM}/limited-ip
    allow: [{ provider: contoso }]
    rate_limit: { per: ip, requests: 2, window: 1h }
  - name: limited-two-issuers
    match: { path: /flows/limited-two-issuers, methods: [POST] }
    upstream: ${UPSTREAM}/limited-two-issuers
    allow: [{ provider: contoso }, { provider: fabrikam }]
    rate_limit: { per: subject, requests: 1, window: 1h }
  - name: limited-ipv6
    match: { path: /flows/limited-ipv6, methods: [POST] }
    upstream: ${UPSTREAM}/limited-ipv6
    allow: [{ provider: contoso }]
    rate_limit: { per: ip, requests: 2, window: 1h }
  - name: limited-ipv6-56
    match: { path: /flows/limited-ipv6-56, methods: [POST] }
    upstream: ${UPSTREAM}/limited-ipv6-56
    allow: [{ provider: contoso }]
    rate_limit: { per: ip, requests: 1, window: 1h, ipv6_prefix: 56 }
  - name: limited-audit
    match: { path: /flows/limited-audit, methods: [POST] }
    upstream: ${UPSTREAM}/limited-audit
    mode: audit
    allow: [{ provider: contoso }]
    rate_limit: { per: app, requests: 1, window: 1h }
  - name: browser
    match: { path: /flows/browser, methods: [GET, POST] }
    upstream: ${UPSTREAM}/browser
    allow: [{ provider: contoso }]
    cors:
      origins: [https://app.example.com]
      headers: [Authorization, Content-Type]
      expose_headers: [X-Flow-Run]
      max_age: 10m
"""


class RecordingUpstream:
    """Answers every request 200, with its own CORS header and a header a page may want to read."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.seen.append((scope["method"], scope["path"]))
        while (await receive()).get("more_body", False):
            pass
        headers = [(b"content-type", b"application/json"), (b"access-control-allow-origin", b"*")]
        await send({"type": "http.response.start", "status": 200, "headers": [*headers, (b"x-flow-run", b"42")]})
        await send({"type": "http.response.body", "body": b'{"ran":true}'})

    def count(self, path: str) -> int:
        return sum(1 for _, seen in self.seen if seen == path)


@pytest.fixture(scope="module")
def recorder() -> Iterator[tuple[RecordingUpstream, ThreadServer]]:
    with served(RecordingUpstream()) as pair:
        yield pair


@pytest.fixture(scope="module")
def sidecar(
    tmp_path_factory: pytest.TempPathFactory,
    recorder: tuple[RecordingUpstream, ThreadServer],
    issuer_server: tuple[DemoIssuer, ThreadServer],
) -> Iterator[SidecarProcess]:
    policy = Path(tmp_path_factory.mktemp("rate_cors")) / "policy.yaml"
    policy.write_text(POLICY)
    env = {"ISSUER": issuer_server[1].url, "UPSTREAM": recorder[1].url}
    process = SidecarProcess(
        policy, env, ("--drain-delay", "0", "--forward-auth-path", "/_auth", "--forward-auth-ingress", "nginx")
    ).start()
    yield process
    assert process.stop() == 0


@pytest.fixture()
def upstream(recorder: tuple[RecordingUpstream, ThreadServer]) -> RecordingUpstream:
    return recorder[0]


def bearer(issuer: DemoIssuer, who: str, app: str = "client-1", tenant: str = CONTOSO_TENANT) -> dict[str, str]:
    claims = {"aud": "api://trigger-gateway", "oid": who, "sub": f"{who}-sub", "azp": app}
    return {"Authorization": f"Bearer {issuer.mint(tenant, claims)}"}


# --- rate limits -------------------------------------------------------------------------------------------------


def test_a_caller_over_its_budget_gets_429_with_retry_after_and_the_upstream_is_not_called(
    client: httpx.Client, admin: httpx.Client, issuer: DemoIssuer, upstream: RecordingUpstream
) -> None:
    lisa, tom = bearer(issuer, "lisa"), bearer(issuer, "tom")
    before = rejections(admin, "limited", "rate_limited")
    statuses = [client.post("/flows/limited", headers=lisa).status_code for _ in range(3)]
    refused = client.post("/flows/limited", headers=lisa)
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "rate_limited"
    assert "www-authenticate" not in refused.headers
    assert rejections(admin, "limited", "rate_limited") == before + 1
    assert client.post("/flows/limited", headers=tom).status_code == 200  # another caller has its own budget
    assert upstream.count("/limited") == 4


def test_refused_requests_do_not_spend_the_budget_of_their_address(client: httpx.Client, issuer: DemoIssuer) -> None:
    for headers in [{}, {"Authorization": "Bearer not-a-jwt"}] * 10:  # a flood of bad requests from 127.0.0.1
        assert client.post("/flows/limited-ip", headers=headers).status_code == 401
    statuses = [client.post("/flows/limited-ip", headers=bearer(issuer, f"caller-{n}")).status_code for n in range(3)]
    assert statuses == [200, 200, 429]  # per ip: two for the address, whoever the callers are


def test_ipv6_clients_in_one_64_share_a_budget_and_other_64s_have_their_own(
    client: httpx.Client, issuer: DemoIssuer
) -> None:
    def post(client_ip: str, path: str = "/flows/limited-ipv6") -> int:
        headers = {"X-Forwarded-For": client_ip, **bearer(issuer, "v6-caller")}
        return client.post(path, headers=headers).status_code

    one_host = ["2001:db8:1:2::1", "2001:db8:1:2:aaaa::7", "[2001:db8:1:2:ffff::9]:443"]  # privacy addresses
    assert [post(address) for address in one_host] == [200, 200, 429]
    assert post("2001:db8:1:3::1") == 200  # the next /64 is another caller
    assert [post("203.0.113.70"), post("::ffff:203.0.113.70"), post("203.0.113.71")] == [200, 200, 200]
    assert post("203.0.113.70") == 429  # an IPv4 client is one address, however it is spelled


def test_the_ipv6_prefix_is_the_routes_own(client: httpx.Client, issuer: DemoIssuer) -> None:
    def post(client_ip: str) -> int:
        headers = {"X-Forwarded-For": client_ip, **bearer(issuer, "v6-caller")}
        return client.post("/flows/limited-ipv6-56", headers=headers).status_code

    assert [post("2001:db8:5:100::1"), post("2001:db8:5:1ff::1"), post("2001:db8:5:200::1")] == [200, 429, 200]


def test_one_subject_of_two_issuers_has_two_budgets(client: httpx.Client, issuer: DemoIssuer) -> None:
    contoso, fabrikam = bearer(issuer, "same-oid"), bearer(issuer, "same-oid", tenant=FABRIKAM_TENANT)
    statuses = [client.post("/flows/limited-two-issuers", headers=headers).status_code for headers in [contoso] * 2]
    statuses += [client.post("/flows/limited-two-issuers", headers=headers).status_code for headers in [fabrikam] * 2]
    assert statuses == [200, 429, 200, 429]  # fabrikam's "same-oid" is not contoso's, and spends its own budget


def test_audit_mode_forwards_over_the_budget_and_counts_it(
    client: httpx.Client, admin: httpx.Client, issuer: DemoIssuer, sidecar: SidecarProcess
) -> None:
    before = rejections(admin, "limited-audit", "rate_limited", mode="audit")
    statuses = [client.post("/flows/limited-audit", headers=bearer(issuer, "ann", app="app-9")).status_code]
    statuses.append(client.post("/flows/limited-audit", headers=bearer(issuer, "bob", app="app-9")).status_code)
    assert statuses == [200, 200]
    assert rejections(admin, "limited-audit", "rate_limited", mode="audit") == before + 1
    record = sidecar.wait_for_log("request", route="limited-audit", reason="rate_limited", timeout=10)
    assert (record["decision"], record["mode"], record["status"]) == ("audit_forward", "audit", 200)


def test_forward_auth_answers_403_rate_limited_over_the_budget(client: httpx.Client, issuer: DemoIssuer) -> None:
    asked = {"X-Original-URI": "/flows/limited", "X-Original-Method": "POST", **bearer(issuer, "fa-caller")}
    statuses = [client.get("/_auth", headers=asked).status_code for _ in range(3)]
    refused = client.get("/_auth", headers=asked)
    assert statuses == [200, 200, 200]
    assert refused.status_code == 403  # nginx auth_request understands only 401 and 403
    assert refused.json()["reason"] == "rate_limited"
    assert 0 < int(refused.headers["retry-after"]) <= 3600


def test_forward_auth_limits_per_ip_by_the_client_the_ingress_names(client: httpx.Client, issuer: DemoIssuer) -> None:
    def ask(client_ip: str, who: str) -> int:
        asked = {"X-Original-URI": "/flows/limited-ip", "X-Original-Method": "POST", "X-Forwarded-For": client_ip}
        return client.get("/_auth", headers={**asked, **bearer(issuer, who)}).status_code

    assert [ask("203.0.113.5", f"u{n}") for n in range(3)] == [200, 200, 403]
    assert ask("203.0.113.6", "u9") == 200  # another client behind the same ingress has its own budget


# --- CORS --------------------------------------------------------------------------------------------------------


def preflight(origin: str = APP, method: str = "POST", headers: str = "authorization, content-type") -> dict[str, str]:
    return {"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers}


def test_a_preflight_is_answered_without_a_token_and_without_the_upstream(
    client: httpx.Client, upstream: RecordingUpstream
) -> None:
    response = client.options("/flows/browser", headers=preflight())
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert {"authorization", "content-type"} <= set(response.headers["access-control-allow-headers"].split(", "))
    assert response.headers["access-control-max-age"] == "600"
    assert "Origin" in response.headers["vary"]
    assert "access-control-allow-credentials" not in response.headers
    assert ("OPTIONS", "/browser") not in upstream.seen


PREFLIGHT_REFUSALS = {
    "origin-not-listed": (preflight(origin="https://evil.example"), "origin"),
    "header-not-allowed": (preflight(headers="authorization, x-secret-switch"), "headers"),
}


@pytest.mark.parametrize(("headers", "refused"), PREFLIGHT_REFUSALS.values(), ids=PREFLIGHT_REFUSALS.keys())
def test_a_preflight_asking_for_what_the_route_does_not_allow_is_refused_counted_and_logged(
    client: httpx.Client, admin: httpx.Client, sidecar: SidecarProcess, headers: dict[str, str], refused: str
) -> None:
    before = rejections(admin, "browser", "cors_refused")
    response = client.options("/flows/browser", headers={**headers, "X-Request-Id": f"preflight-{refused}"})
    assert response.status_code == 403
    assert response.json()["reason"] == "cors_refused"
    assert "access-control-allow-origin" not in response.headers
    assert rejections(admin, "browser", "cors_refused") == before + 1
    record = sidecar.wait_for_log("request", request_id=f"preflight-{refused}", timeout=10)
    assert (record["decision"], record["reason"], record["cors"], record["status"]) == (
        "reject",
        "cors_refused",
        refused,
        403,
    )


def test_a_preflight_for_a_route_without_cors_is_an_ordinary_request(client: httpx.Client) -> None:
    response = client.options("/flows/limited", headers=preflight())
    assert response.status_code == 405  # the route takes POST only, and does not answer preflights
    assert "access-control-allow-origin" not in response.headers


def test_an_actual_request_still_needs_a_token_and_the_page_can_read_the_401(client: httpx.Client) -> None:
    response = client.post("/flows/browser", headers={"Origin": APP})
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == APP
    assert "www-authenticate" in response.headers["access-control-expose-headers"]
    assert response.headers["www-authenticate"] == 'Bearer realm="test-realm"'


def test_another_origin_gets_no_cors_headers_on_the_401(client: httpx.Client) -> None:
    response = client.post("/flows/browser", headers={"Origin": "https://evil.example"})
    assert response.status_code == 401
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"] == "Origin"


def test_an_allowed_request_gets_the_upstream_answer_with_the_sidecars_cors_headers_only(
    client: httpx.Client, issuer: DemoIssuer
) -> None:
    response = client.post("/flows/browser", headers={"Origin": APP, **bearer(issuer, "lisa")}, json={"x": 1})
    assert response.status_code == 200
    assert response.json() == {"ran": True}
    assert response.headers.get_list("access-control-allow-origin") == [APP]  # the upstream's "*" is dropped
    assert response.headers["access-control-expose-headers"] == "x-flow-run"
    assert response.headers["x-flow-run"] == "42"
    assert "Origin" in response.headers.get_list("vary")


FORWARD_AUTH_PREFLIGHTS = {
    "allowed": (APP, 200, None),
    "origin-not-listed": ("https://evil.example", 403, "cors_refused"),
}


@pytest.mark.parametrize(("origin", "status", "reason"), FORWARD_AUTH_PREFLIGHTS.values(), ids=FORWARD_AUTH_PREFLIGHTS)
def test_forward_auth_lets_allowed_preflights_through_without_a_token(
    client: httpx.Client, origin: str, status: int, reason: str | None
) -> None:
    asked = {"X-Original-URI": "/flows/browser", "X-Original-Method": "OPTIONS", **preflight(origin=origin)}
    response = client.get("/_auth", headers=asked)
    assert response.status_code == status
    assert "x-auth-subject" not in response.headers
    if reason is not None:
        assert response.json()["reason"] == reason
