"""What the upstream receives, and what the client gets back: through a real sidecar to a real echo server."""

from __future__ import annotations

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.integration.conftest import LOOKUP_SIG
from tests.support.metrics import sample
from tests.support.people import AUD, LISA


def bearer(issuer: DemoIssuer, **claims: object) -> dict[str, str]:
    token = issuer.mint(CONTOSO_TENANT, {"aud": AUD, **LISA, **claims})
    return {"Authorization": f"Bearer {token}"}


def test_exact_path_goes_to_the_upstream_url_as_written(client: httpx.Client, issuer: DemoIssuer) -> None:
    echo = client.post("/flows/user-lookup", headers=bearer(issuer)).json()
    assert echo["path"] == "/workflows/lookup/triggers/manual/paths/invoke"
    assert echo["query"] == f"api-version=2016-10-01&sp=%2Ftriggers%2Fmanual%2Frun&sig={LOOKUP_SIG}"


@pytest.mark.parametrize(
    "client_query",
    ["sig=evil", "SIG=evil", "%53ig=evil", "Sig=evil&sig=evil2", "API-VERSION=1999", "sp=%2Fother"],
    ids=["sig", "upper", "encoded", "repeated", "other-param-upper", "sp"],
)
def test_upstream_query_parameters_win(client_query: str, client: httpx.Client, issuer: DemoIssuer) -> None:
    echo = client.post(f"/flows/user-lookup?{client_query}&extra=1", headers=bearer(issuer)).json()
    assert echo["query"] == f"api-version=2016-10-01&sp=%2Ftriggers%2Fmanual%2Frun&sig={LOOKUP_SIG}&extra=1"


def test_prefix_route_appends_the_rest_of_the_path(client: httpx.Client) -> None:
    echo = client.get("/public/a/b?x=1").json()
    assert echo["path"] == "/static/a/b"
    assert echo["query"] == "x=1"


def test_authorization_is_stripped_and_identity_headers_are_set(client: httpx.Client, issuer: DemoIssuer) -> None:
    headers = {**bearer(issuer, tid=CONTOSO_TENANT, roles=["Reader", "Writer"])}
    echo = client.post("/flows/user-lookup", headers=headers).json()["headers"]
    assert "authorization" not in echo
    assert echo["x-auth-subject"] == LISA["oid"]
    assert echo["x-auth-user"] == "lisa@contoso.com"
    assert echo["x-auth-tenant"] == CONTOSO_TENANT
    assert echo["x-auth-roles"] == "Reader,Writer"
    assert echo["x-auth-provider"] == "contoso"


def test_control_characters_in_claims_reach_the_upstream_as_spaces(client: httpx.Client, issuer: DemoIssuer) -> None:
    # NUL, DEL, ESC and C1's NEL in a verified claim: a C parser would cut `a\0b` to `a`, a strict one refuse the call.
    claims = {"upn": "a\x00b\x7fc\x1bd\x85e\r\n", "roles": ["R\x00x"]}
    response = client.post("/flows/user-lookup", headers=bearer(issuer, **claims))
    assert response.status_code == 200
    echo = response.json()["headers"]
    assert (echo["x-auth-user"], echo["x-auth-roles"]) == ("a b c d e", "R x")


def test_forward_token_route_keeps_authorization(client: httpx.Client, issuer: DemoIssuer) -> None:
    headers = bearer(issuer)
    echo = client.post("/flows/passthrough", headers=headers).json()["headers"]
    assert echo["authorization"] == headers["Authorization"]


@pytest.mark.parametrize("path", ["/flows/user-lookup", "/public/x"], ids=["authenticated", "anyone"])
def test_client_copies_of_identity_headers_never_reach_the_upstream(
    path: str, client: httpx.Client, issuer: DemoIssuer
) -> None:
    spoofed = [
        ("X-Auth-Subject", "admin"),
        ("x-auth-user", "admin@contoso.com"),
        ("X-AUTH-ROLES", "Payroll.Invoke"),
        ("X-Auth_Tenant", "evil"),
        ("X-Auth-Provider", "contoso"),
    ]
    method = "POST" if path.startswith("/flows") else "GET"
    echo = client.request(method, path, headers=[*bearer(issuer).items(), *spoofed]).json()["headers"]
    values = " ".join(echo.values())
    assert "admin" not in values and "evil" not in values and "x-auth_tenant" not in echo
    if path == "/public/x":
        assert not any(name.startswith("x-auth") for name in echo)


def test_hop_by_hop_and_connection_named_headers_are_dropped(client: httpx.Client) -> None:
    headers = {"Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1", "Keep-Alive": "timeout=5", "TE": "x"}
    echo = client.get("/public/x", headers=headers).json()["headers"]
    assert "x-secret-hop" not in echo and "keep-alive" not in echo and "te" not in echo


def test_forwarded_headers_are_set_by_the_sidecar(client: httpx.Client) -> None:
    echo = client.get("/public/x", headers={"X-Forwarded-For": "6.6.6.6", "Host": "gateway.example"}).json()
    assert echo["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert echo["headers"]["x-forwarded-proto"] == "http"
    assert echo["headers"]["x-forwarded-host"] == "gateway.example"
    assert echo["headers"]["host"].startswith("127.0.0.1:")  # the upstream's own host, not the client's


def test_no_headers_are_added_that_the_client_did_not_send(client: httpx.Client) -> None:
    request = client.build_request("GET", "/public/x")
    for name in ("user-agent", "accept", "accept-encoding"):
        del request.headers[name]
    echo = client.send(request).json()["headers"]
    assert "user-agent" not in echo and "accept" not in echo and "accept-encoding" not in echo


def test_request_body_is_forwarded(client: httpx.Client, issuer: DemoIssuer) -> None:
    echo = client.post("/flows/user-lookup", headers=bearer(issuer), content=b'{"user":"tom"}').json()
    assert echo["body_bytes"] == 14


def test_upstream_response_headers_pass_through_and_none_are_added(client: httpx.Client) -> None:
    response = client.get("/public/x")  # the test upstream sends neither Server nor Date
    assert response.headers["content-type"] == "application/json"
    assert "server" not in response.headers and "date" not in response.headers


def test_unreachable_upstream_is_502(client: httpx.Client, admin: httpx.Client) -> None:
    before = sample(admin, "sidecar_upstream_errors_total", route="dead", error="upstream_unreachable")
    response = client.get("/dead")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["reason"] == "upstream_unreachable"
    assert sample(admin, "sidecar_upstream_errors_total", route="dead", error="upstream_unreachable") == before + 1


def test_upstream_timeout_is_504(client: httpx.Client, admin: httpx.Client) -> None:
    response = client.get("/slow/5")  # the route's timeout is 500ms; the echo waits 5 s
    assert response.status_code == 504
    assert response.json()["reason"] == "upstream_timeout"
    assert sample(admin, "sidecar_upstream_errors_total", route="slow", error="upstream_timeout") >= 1


def test_requests_are_counted_by_route_method_and_code(client: httpx.Client, admin: httpx.Client) -> None:
    before = sample(admin, "sidecar_requests_total", route="status", method="GET", code="200")
    client.get("/public/counted")
    assert sample(admin, "sidecar_requests_total", route="status", method="GET", code="200") == before + 1
    assert sample(admin, "sidecar_request_duration_seconds_count", route="status") >= 1


def test_open_upstream_connections_are_a_gauge(client: httpx.Client, admin: httpx.Client) -> None:
    client.get("/public/counted")  # the answer leaves its connection open in the pool (kept alive)
    assert sample(admin, "sidecar_upstream_connections") >= 1
