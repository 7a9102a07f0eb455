"""Every decision of the table, through a real sidecar process: status, challenge, problem body, metric."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, FABRIKAM_TENANT, DemoIssuer
from tests.support import jwtkit, rawhttp
from tests.support.metrics import rejections
from tests.support.people import AUD, LISA, TOM
from tests.support.servers import SidecarProcess


def contoso(issuer: DemoIssuer, **claims: object) -> str:
    return issuer.mint(CONTOSO_TENANT, {"aud": AUD, **LISA, **claims})


def foreign_key(issuer: DemoIssuer, **claims: object) -> str:
    """Signed by a key the issuer never published (a kid it does not know)."""
    payload = {"iss": issuer.issuer_url(CONTOSO_TENANT), "aud": AUD, "exp": int(time.time()) + 300, **LISA, **claims}
    return jwtkit.mint(payload, jwtkit.rsa_key("not-published"))


@dataclass(frozen=True)
class Case:
    token: Callable[[DemoIssuer], str | None]
    status: int
    reason: str | None
    route: str = "payroll"
    path: str = "/flows/payroll"


CASES = {
    "allowed_by_user": Case(lambda i: contoso(i), 200, None),
    "allowed_by_role": Case(lambda i: contoso(i, **TOM, roles=["Payroll.Invoke"]), 200, None),
    "allowed_by_v1_audience": Case(lambda i: contoso(i, aud="6f1c2a9e-0d4b-4c1e-9a57-3b2f8e7d1c40"), 200, None),
    "missing_token": Case(lambda i: None, 401, "missing_token"),
    "malformed_token": Case(lambda i: "not-a-jwt", 401, "malformed_token"),
    "forbidden_algorithm": Case(
        lambda i: jwtkit.forge_unsigned({"iss": i.issuer_url(CONTOSO_TENANT), "aud": AUD, **LISA}, alg="none"),
        401,
        "forbidden_algorithm",
    ),
    "wrong_issuer": Case(lambda i: i.mint(FABRIKAM_TENANT, {"aud": AUD, **LISA}), 401, "wrong_issuer"),
    "unknown_key": Case(foreign_key, 401, "unknown_key"),
    "bad_signature": Case(lambda i: jwtkit.tamper_payload(contoso(i), upn="admin@contoso.com"), 401, "bad_signature"),
    "expired": Case(lambda i: contoso(i, exp=int(time.time()) - 3600), 401, "expired"),
    "not_yet_valid": Case(lambda i: contoso(i, nbf=int(time.time()) + 3600), 401, "not_yet_valid"),
    "wrong_audience": Case(lambda i: contoso(i, aud="api://someone-else"), 401, "wrong_audience"),
    "not_allowed": Case(lambda i: contoso(i, **TOM), 403, "not_allowed"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decision(case: Case, client: httpx.Client, admin: httpx.Client, issuer: DemoIssuer) -> None:
    token = case.token(issuer)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    before = rejections(admin, case.route, case.reason) if case.reason else 0.0

    response = client.post(case.path, headers=headers, content=b"{}")

    assert response.status_code == case.status
    request_id = response.headers["x-request-id"]
    if case.reason is None:
        assert response.json()["method"] == "POST"  # the echo upstream answered
        return
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == case.status
    assert body["reason"] == case.reason
    assert body["request_id"] == request_id
    assert body["route"] == case.route
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="test-realm"')
    if case.reason == "missing_token":
        assert "error=" not in challenge  # RFC 6750 §3.1: no error code when no credentials were sent
    elif case.status == 401:
        assert 'error="invalid_token"' in challenge and "error_description=" in challenge
    else:
        assert 'error="insufficient_scope"' in challenge
    if token:
        assert token not in response.text and token not in challenge
    assert rejections(admin, case.route, case.reason) == before + 1


def test_no_route_is_404(client: httpx.Client, admin: httpx.Client) -> None:
    before = rejections(admin, "(none)", "no_route")
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["reason"] == "no_route"
    assert "www-authenticate" not in response.headers
    assert rejections(admin, "(none)", "no_route") == before + 1


def test_wrong_method_is_405_with_allow(client: httpx.Client, admin: httpx.Client) -> None:
    before = rejections(admin, "(none)", "method_not_allowed")
    response = client.get("/flows/payroll")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["reason"] == "method_not_allowed"
    assert rejections(admin, "(none)", "method_not_allowed") == before + 1


def test_anyone_route_needs_no_token(client: httpx.Client) -> None:
    response = client.get("/public/health")
    assert response.status_code == 200
    assert response.json()["path"] == "/static/health"


@pytest.mark.parametrize(
    "authorization",
    ["bearer {t}", "BEARER {t}", "Bearer {t}"],
    ids=["lower", "upper", "canonical"],
)
def test_bearer_scheme_is_case_insensitive(authorization: str, client: httpx.Client, issuer: DemoIssuer) -> None:
    response = client.post("/flows/payroll", headers={"Authorization": authorization.format(t=contoso(issuer))})
    assert response.status_code == 200


def test_two_authorization_headers_are_refused(client: httpx.Client, issuer: DemoIssuer) -> None:
    token = contoso(issuer)
    headers = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    response = client.post("/flows/payroll", headers=headers)
    assert response.status_code == 400  # which one would the upstream believe? (issue 4: refused before any check)
    assert response.json()["reason"] == "conflicting_headers"


def test_token_in_query_is_not_a_token(client: httpx.Client, issuer: DemoIssuer) -> None:
    response = client.post("/flows/payroll", params={"access_token": contoso(issuer)})
    assert response.status_code == 401
    assert response.json()["reason"] == "missing_token"


def test_a_token_of_one_route_is_not_authorised_on_another(client: httpx.Client, issuer: DemoIssuer) -> None:
    tom = contoso(issuer, **TOM)
    assert client.post("/flows/user-lookup", headers={"Authorization": f"Bearer {tom}"}).status_code == 200
    assert client.post("/flows/payroll", headers={"Authorization": f"Bearer {tom}"}).status_code == 403


def test_other_tenant_is_allowed_only_where_its_provider_is(client: httpx.Client, issuer: DemoIssuer) -> None:
    eve = issuer.mint(FABRIKAM_TENANT, {"aud": AUD, "oid": "eve", "upn": "eve@fabrikam.com"})
    assert client.post("/flows/partner", headers={"Authorization": f"Bearer {eve}"}).status_code == 200
    assert client.post("/flows/user-lookup", headers={"Authorization": f"Bearer {eve}"}).status_code == 401


def test_request_id_is_kept_when_well_formed_and_replaced_otherwise(client: httpx.Client) -> None:
    kept = client.get("/public/x", headers={"X-Request-Id": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    assert kept.json()["headers"]["x-request-id"] == "abc-123"
    replaced = client.get("/public/x", headers={"X-Request-Id": 'bad id"<script>'})
    assert replaced.headers["x-request-id"] != 'bad id"<script>'
    assert len(replaced.headers["x-request-id"]) == 24


def test_audit_mode_forwards_and_counts_a_would_be_rejection(
    client: httpx.Client, admin: httpx.Client, issuer: DemoIssuer
) -> None:
    before = rejections(admin, "audited", "not_allowed", mode="audit")
    tom = contoso(issuer, **TOM)
    response = client.post("/flows/audited", headers={"Authorization": f"Bearer {tom}"})
    assert response.status_code == 200
    assert response.json()["path"] == "/audited"
    assert rejections(admin, "audited", "not_allowed", mode="audit") == before + 1
    assert rejections(admin, "audited", "not_allowed") == 0


EMPTY_BEARERS = {
    "scheme-alone": b"Bearer",
    "scheme-and-space": b"Bearer ",
    "scheme-and-spaces": b"Bearer    ",
    "lower-case-and-tab": b"bearer \t",
}


@pytest.mark.parametrize("authorization", EMPTY_BEARERS.values(), ids=EMPTY_BEARERS.keys())
def test_a_bearer_scheme_without_a_token_is_missing_token(
    authorization: bytes, sidecar: SidecarProcess, admin: httpx.Client
) -> None:
    """RFC 6750 §3.1: a request without credentials gets a challenge with no error code, whatever its spelling."""
    before = rejections(admin, "payroll", "missing_token")
    reply = rawhttp.request(sidecar.proxy, b"/flows/payroll", b"POST", [(b"Authorization", authorization)], b"{}")
    assert (reply.status, reply.json()["reason"]) == (401, "missing_token")
    challenges = [value for name, value in reply.headers if name == "www-authenticate"]
    assert challenges == ['Bearer realm="test-realm"']
    assert rejections(admin, "payroll", "missing_token") == before + 1
