"""Forward-auth: the endpoint driven as each ingress calls it (`--forward-auth-ingress`), and the headers a client
adds to look like the ingress. tests/ingress runs the same answers behind the real nginx, Caddy and Envoy."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from sidecar.demo.issuer import DemoIssuer
from sidecar.edge.forward_auth import READS
from sidecar.options import FORWARD_AUTH_INGRESSES, ServeOptions
from sidecar.reasons import Reason, auditable
from tests.integration.conftest import POLICY
from tests.support.ingress_asks import INGRESSES, SPELLINGS, Headers
from tests.support.metrics import rejections
from tests.support.people import LISA, TOM, bearer
from tests.support.servers import SidecarProcess


def test_every_ingress_is_driven_here() -> None:
    assert set(INGRESSES) == set(FORWARD_AUTH_INGRESSES) == set(READS)


@pytest.fixture(scope="module")
def sidecars(sidecar: SidecarProcess, sidecar_env: dict[str, str]) -> Iterator[dict[str, SidecarProcess]]:
    """One sidecar per ingress (the suite's own answers as nginx); started together, then waited for."""
    started = {"nginx": sidecar}
    try:
        for ingress in INGRESSES.keys() - {"nginx"}:
            args = ("--drain-delay", "0", "--forward-auth-path", "/_auth", "--forward-auth-ingress", ingress)
            started[ingress] = SidecarProcess(POLICY, sidecar_env, args).start(wait_ready=False)
        for ingress in INGRESSES.keys() - {"nginx"}:  # the suite's own is ready already
            started[ingress].wait_ready()
        yield started
    finally:
        for ingress, process in started.items():
            if ingress != "nginx":
                assert process.stop() == 0


@pytest.fixture(params=list(INGRESSES))
def ingress(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture()
def asker(ingress: str, sidecars: dict[str, SidecarProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecars[ingress].proxy, timeout=30, trust_env=False) as http:
        yield http


@pytest.fixture()
def asker_admin(ingress: str, sidecars: dict[str, SidecarProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecars[ingress].admin, timeout=30, trust_env=False) as http:
        yield http


def ask(http: httpx.Client, ingress: str, method: str, uri: str, extra: Headers | None = None) -> httpx.Response:
    auth_method, path, headers = INGRESSES[ingress](method, uri)
    return http.request(auth_method, path, headers=[*headers, *(extra or [])])


def test_allowed_caller_gets_200_with_identity_headers(ingress: str, asker: httpx.Client, issuer: DemoIssuer) -> None:
    response = ask(asker, ingress, "POST", "/flows/payroll?api=1", bearer(issuer, LISA))
    assert response.status_code == 200
    assert response.headers.get_list("x-auth-user") == ["lisa@contoso.com"]
    assert response.headers.get_list("x-auth-subject") == [LISA["oid"]]
    assert response.headers.get_list("x-auth-provider") == ["contoso"]
    assert response.content == b""


def test_missing_token_is_401_with_challenge(ingress: str, asker: httpx.Client, asker_admin: httpx.Client) -> None:
    before = rejections(asker_admin, "payroll", "missing_token")
    response = ask(asker, ingress, "POST", "/flows/payroll")
    assert response.status_code == 401
    assert response.headers.get_list("www-authenticate") == ['Bearer realm="test-realm"']
    assert response.json()["reason"] == "missing_token"
    assert rejections(asker_admin, "payroll", "missing_token") == before + 1


def test_caller_not_on_the_list_is_403(ingress: str, asker: httpx.Client, issuer: DemoIssuer) -> None:
    response = ask(asker, ingress, "POST", "/flows/payroll", bearer(issuer, TOM))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def test_an_open_route_is_200_without_a_token(ingress: str, asker: httpx.Client) -> None:
    assert ask(asker, ingress, "GET", "/public/x").status_code == 200


def test_a_request_that_names_no_original_is_refused(ingress: str, asker: httpx.Client) -> None:
    response = asker.get("/_auth")
    assert response.status_code == 403
    assert response.json()["reason"] == "invalid_path"


def _foreign(ingress: str) -> list[str]:
    reads = READS[ingress]
    own = {name.decode() for name in reads} if reads is not None else set()
    return [spelling for spelling in SPELLINGS if spelling.lower() not in own]


SPOOFS = [
    (ingress, spelling)
    for ingress in INGRESSES
    for spelling in _foreign(ingress)
]  # fmt: skip


def _spoof_value(spelling: str) -> str:
    return "OPTIONS" if spelling.lower().endswith("method") else "/public/x"


@pytest.mark.parametrize(("ingress", "spelling"), SPOOFS, ids=[f"{i}-{s}" for i, s in SPOOFS])
def test_an_original_header_of_another_spelling_is_refused(
    ingress: str, spelling: str, asker: httpx.Client, asker_admin: httpx.Client, issuer: DemoIssuer
) -> None:
    """A tokenless POST to a protected route that also names an open path or OPTIONS in a header this ingress does
    not set: 403 forward_auth_spoofed, counted, whether the client sends the header before or after the ingress's."""
    before = rejections(asker_admin, "(none)", "forward_auth_spoofed")
    spoof = [(spelling, _spoof_value(spelling))]
    auth_method, path, headers = INGRESSES[ingress]("POST", "/flows/payroll")
    for sent in ([*spoof, *headers], [*headers, *spoof], [*headers, *spoof, *bearer(issuer, LISA)]):
        response = asker.request(auth_method, path, headers=sent)
        assert response.status_code == 403
        assert response.json()["reason"] == "forward_auth_spoofed"
        assert "x-auth-user" not in response.headers
    assert rejections(asker_admin, "(none)", "forward_auth_spoofed") == before + 3


OWN = [(ingress, name.decode()) for ingress, reads in READS.items() if reads is not None for name in reads]


@pytest.mark.parametrize(("ingress", "header"), OWN, ids=[f"{i}-{h}" for i, h in OWN])
def test_a_second_copy_of_the_ingress_header_is_refused(ingress: str, header: str, asker: httpx.Client) -> None:
    auth_method, path, headers = INGRESSES[ingress]("POST", "/flows/payroll")
    value = "OPTIONS" if header.endswith("method") else "https://gw.example/public/x"
    for sent in ([(header, value), *headers], [*headers, (header, value)]):
        response = asker.request(auth_method, path, headers=sent)
        assert response.status_code == 403
        assert response.json()["reason"] == "forward_auth_spoofed"


def test_the_log_line_of_a_spoof_holds_no_path_the_client_made_up(
    sidecar: SidecarProcess, client: httpx.Client
) -> None:
    headers = [("X-Original-URI", "/flows/payroll"), ("X-Original-Method", "POST"), ("X-Original-URL", "/public/x")]
    response = client.get("/_auth", headers=[*headers, ("X-Request-Id", "spoof-log-1")])
    assert response.status_code == 403
    record = sidecar.wait_for_log("request", request_id="spoof-log-1")
    assert record["reason"] == "forward_auth_spoofed"
    assert record["forward_auth"] is True
    assert record.get("path") is None


def test_audit_mode_never_lets_a_spoof_through() -> None:
    """Audit mode forwards would-be refusals about credentials; which request was asked about is not one of those."""
    assert not auditable(Reason.FORWARD_AUTH_SPOOFED)


def test_a_missing_method_header_is_not_guessed(client: httpx.Client) -> None:
    """Without X-Original-Method the auth request's own GET would be decided: a POST to a GET-only open route."""
    response = client.get("/_auth", headers={"X-Original-URI": "/public/x"})
    assert response.status_code == 403
    assert response.json()["reason"] == "invalid_path"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil?/public/x",
        "https://ev@il/public/x",
        "https://gw#/public/x",
        "public/x",
        "ftp://gw/public/x",
        "https://gw",
    ],
)
def test_an_original_url_that_is_not_a_plain_url_is_refused(url: str, sidecars: dict[str, SidecarProcess]) -> None:
    """ingress-nginx builds X-Original-URL from the client's own Host header (nginx lets `?`, `#`, `@` through)."""
    with httpx.Client(base_url=sidecars["ingress-nginx"].proxy, trust_env=False) as http:
        response = http.get("/_auth", headers={"X-Original-URL": url, "X-Original-Method": "GET"})
    assert response.status_code == 403
    assert response.json()["reason"] == "invalid_path"


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
        headers=[("X-Original-URI", "/public/../flows/payroll"), ("X-Original-Method", "POST"), *bearer(issuer, TOM)],
    )
    assert response.status_code == 403  # decided as /flows/payroll, not as the open /public/ prefix


def test_a_double_slash_uri_is_a_path_not_a_host(client: httpx.Client) -> None:
    response = client.get("/_auth", headers={"X-Original-URI": "//flows/payroll", "X-Original-Method": "POST"})
    assert response.status_code == 401  # decided as /flows/payroll (slashes merged), not host "flows", path /payroll


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
        assert response.headers.get_list(name) == [""]


def test_control_characters_in_claims_are_answered_as_spaces_not_a_broken_answer(
    client: httpx.Client, issuer: DemoIssuer
) -> None:
    # The listener refuses to send NUL or DEL in a header: the answer used to be an untyped 500 and a closed connection.
    who = {**LISA, "upn": "a\x00b\x7fc\x1bd\x85e"}
    original = {"X-Original-URI": "/flows/user-lookup", "X-Original-Method": "POST"}
    response = client.get("/_auth", headers={**original, **dict(bearer(issuer, who))})
    assert response.status_code == 200
    assert response.headers.get_list("x-auth-user") == ["a b c d e"]
    assert response.headers.get_list("x-auth-subject") == [LISA["oid"]]


def test_an_original_uri_with_control_characters_is_refused(client: httpx.Client) -> None:
    response = client.get("/_auth", headers={"X-Original-URI": "/pub\tlic/x", "X-Original-Method": "GET"})
    assert response.status_code == 403
    assert response.json()["reason"] == "invalid_path"


def test_forward_auth_path_without_an_ingress_does_not_start() -> None:
    command = [sys.executable, "-m", "sidecar", "serve", "--config", str(POLICY), "--forward-auth-path", "/_auth"]
    command += ["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={"PATH": ""})
    assert done.returncode == 2
    assert "--forward-auth-path needs --forward-auth-ingress ingress-nginx|nginx|traefik|caddy|envoy" in done.stderr


@pytest.mark.parametrize(
    ("flags", "environ", "error"),
    [
        ({"forward_auth_path": "/_auth"}, {}, "needs --forward-auth-ingress"),
        ({}, {"SIDECAR_FORWARD_AUTH_PATH": "/_auth"}, "needs --forward-auth-ingress"),
        ({}, {"SIDECAR_FORWARD_AUTH_PATH": "/_auth", "SIDECAR_FORWARD_AUTH_INGRESS": "haproxy"}, "is not one of"),
        ({"forward_auth_ingress": "caddy"}, {}, "needs --forward-auth-path"),
    ],
    ids=["flag-without-ingress", "env-without-ingress", "unknown-ingress", "ingress-without-path"],
)
def test_forward_auth_options_come_together(flags: dict[str, str], environ: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        ServeOptions.resolve({"config": "p.yaml", **flags}, environ)


def test_forward_auth_options_from_the_environment() -> None:
    environ = {"SIDECAR_FORWARD_AUTH_PATH": "/_auth", "SIDECAR_FORWARD_AUTH_INGRESS": "caddy"}
    options = ServeOptions.resolve({"config": "p.yaml"}, environ)
    assert (options.forward_auth_path, options.forward_auth_ingress) == ("/_auth", "caddy")
