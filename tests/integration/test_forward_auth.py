"""Forward-auth: the endpoint driven as ingress-nginx, Traefik and Envoy ext_authz call it."""

from __future__ import annotations

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.metrics import rejections

LISA = {"oid": "aaaaaaaa-0000-0000-0000-00000000000a", "sub": "lisa-sub", "upn": "lisa@contoso.com"}
TOM = {"oid": "aaaaaaaa-0000-0000-0000-00000000000b", "sub": "tom-sub", "upn": "tom@contoso.com"}


def token(issuer: DemoIssuer, who: dict[str, str]) -> dict[str, str]:
    minted = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", **who})
    return {"Authorization": f"Bearer {minted}"}


# How each ingress tells the auth service what the original request was.
INGRESSES = {
    "ingress-nginx": lambda method, uri: (
        "GET",
        "/_auth",
        {"X-Original-URL": f"https://gw.example{uri}", "X-Original-Method": method},
    ),
    "nginx-auth-request": lambda method, uri: ("GET", "/_auth", {"X-Original-URI": uri, "X-Original-Method": method}),
    "traefik": lambda method, uri: (
        "GET",
        "/_auth",
        {"X-Forwarded-Uri": uri, "X-Forwarded-Method": method, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw"},
    ),
    "envoy-ext-authz": lambda method, uri: (method, "/_auth" + uri, {}),
}


@pytest.mark.parametrize("ingress", INGRESSES.values(), ids=INGRESSES.keys())
def test_allowed_caller_gets_200_with_identity_headers(ingress, client: httpx.Client, issuer: DemoIssuer) -> None:
    method, path, headers = ingress("POST", "/flows/payroll?api=1")
    response = client.request(method, path, headers={**headers, **token(issuer, LISA)})
    assert response.status_code == 200
    assert response.headers["x-auth-user"] == "lisa@contoso.com"
    assert response.headers["x-auth-subject"] == LISA["oid"]
    assert response.headers["x-auth-provider"] == "contoso"
    assert response.content == b""


@pytest.mark.parametrize("ingress", INGRESSES.values(), ids=INGRESSES.keys())
def test_missing_token_is_401_with_challenge(ingress, client: httpx.Client, admin: httpx.Client) -> None:
    before = rejections(admin, "payroll", "missing_token")
    method, path, headers = ingress("POST", "/flows/payroll")
    response = client.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="test-realm"'
    assert response.json()["reason"] == "missing_token"
    assert rejections(admin, "payroll", "missing_token") == before + 1


@pytest.mark.parametrize("ingress", INGRESSES.values(), ids=INGRESSES.keys())
def test_caller_not_on_the_list_is_403(ingress, client: httpx.Client, issuer: DemoIssuer) -> None:
    method, path, headers = ingress("POST", "/flows/payroll")
    response = client.request(method, path, headers={**headers, **token(issuer, TOM)})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


@pytest.mark.parametrize(
    ("method", "uri", "reason"),
    [
        ("GET", "/nowhere", "no_route"),
        ("GET", "/flows/payroll", "method_not_allowed"),
        ("GET", "/a/%2e%2e/..", "invalid_path"),
    ],
    ids=["no-route", "wrong-method", "bad-path"],
)
def test_other_refusals_are_403_for_nginx(method: str, uri: str, reason: str, client: httpx.Client) -> None:
    """nginx auth_request understands only 2xx, 401 and 403: anything else would become a 500 at the ingress."""
    response = client.get("/_auth", headers={"X-Original-URI": uri, "X-Original-Method": method})
    assert response.status_code == 403
    assert response.json()["reason"] == reason
    assert response.json()["status"] == 403


def test_the_same_normalisation_applies(client: httpx.Client, issuer: DemoIssuer) -> None:
    response = client.get(
        "/_auth",
        headers={"X-Original-URI": "/public/../flows/payroll", "X-Original-Method": "POST", **token(issuer, TOM)},
    )
    assert response.status_code == 403  # decided as /flows/payroll, not as the open /public/ prefix


def test_a_request_that_names_no_original_is_refused(client: httpx.Client) -> None:
    response = client.get("/_auth")
    assert response.status_code == 403


def test_no_upstream_is_called(client: httpx.Client) -> None:
    # The `dead` route's upstream refuses connections: a proxied call is 502, a forward-auth answer is 200.
    assert client.get("/dead").status_code == 502
    assert client.get("/_auth", headers={"X-Original-URI": "/dead", "X-Original-Method": "GET"}).status_code == 200


def test_every_identity_header_is_answered_even_empty(client: httpx.Client) -> None:
    """An ingress copies these headers onto the upstream request: an absent one would leave a client's copy in place."""
    response = client.get(
        "/_auth", headers={"X-Original-URI": "/public/x", "X-Original-Method": "GET", "X-Auth-User": "admin"}
    )
    assert response.status_code == 200
    for name in ("x-auth-subject", "x-auth-user", "x-auth-tenant", "x-auth-roles", "x-auth-provider"):
        assert response.headers[name] == ""


def test_an_original_uri_with_control_characters_is_refused(client: httpx.Client) -> None:
    response = client.get("/_auth", headers={"X-Original-URI": "/pub\tlic/x", "X-Original-Method": "GET"})
    assert response.status_code == 403
    assert response.json()["reason"] == "invalid_path"
