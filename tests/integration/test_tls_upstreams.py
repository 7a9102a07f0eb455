"""A route's and a provider's own `tls:` through a real sidecar, with throwaway CAs (trustme): an upstream that
requires a client certificate (mutual TLS), an upstream behind a private CA, and an issuer (discovery and JWKS over
https on 127.0.0.1) behind a private CA. Every refusal is a 502 (503 for keys) with the cause in the log only."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from sidecar.demo.cast import demo_clients
from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.integration.test_upstream_tls import _Hello, https_upstream
from tests.support.metrics import sample
from tests.support.servers import SidecarProcess, ThreadServer


class _KeptAlive(_Hello):
    protocol_version = "HTTP/1.1"  # connections stay open: the sidecar pools them


_ROUTE = "  - name: {name}\n    match: {{ path: /{name} }}\n    upstream: {upstream}/hello\n    allow: anyone\n"


@pytest.fixture()
def pki(tmp_path: Path) -> dict[str, object]:
    """The upstream's private CA, the CA that issues callers' client certificates, and one such certificate."""
    server_ca, client_ca = trustme.CA(), trustme.CA()
    caller = client_ca.issue_cert("sidecar.test")
    files = {
        "ca.pem": server_ca.cert_pem.bytes(),
        "client.pem": caller.cert_chain_pems[0].bytes(),
        "client.key": caller.private_key_pem.bytes(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {"server_ca": server_ca, "client_ca": client_ca, "caller": caller}


def _server_context(ca: trustme.CA, client_ca: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if client_ca is not None:  # mutual TLS: no certificate from this CA, no connection
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    return context


def _start(tmp_path: Path, text: str, env: dict[str, str] | None = None, ready: bool = True) -> SidecarProcess:
    policy = tmp_path / "policy.yaml"
    policy.write_text(text)
    return SidecarProcess(policy, env or {}).start(wait_ready=ready)


def _refused_with_the_cause_in_the_log_only(sidecar: SidecarProcess, path: str, cause: str) -> None:
    rid = f"refused-{path.strip('/')}-{len(sidecar.lines)}"
    answer = httpx.get(sidecar.proxy + path, headers={"X-Request-Id": rid}, trust_env=False)
    assert (answer.status_code, answer.json()["reason"]) == (502, "upstream_unreachable")
    assert answer.json()["detail"] == "The upstream could not be reached."
    assert cause not in answer.text
    line = sidecar.wait_for_log("request", request_id=rid)
    assert (line["decision"], line["reason"]) == ("upstream_error", "upstream_unreachable")
    assert cause in line["upstream_error"], line["upstream_error"]


def test_a_mutual_tls_upstream_is_reached_with_the_route_s_client_certificate_and_refused_without(
    tmp_path: Path, pki: dict[str, trustme.CA]
) -> None:
    context = _server_context(pki["server_ca"], pki["client_ca"])
    with https_upstream(context, _KeptAlive) as upstream:
        # The key through ${file:...} (a mounted Secret's content), the certificate and the CA as paths.
        with_cert = _ROUTE.format(name="mtls", upstream=upstream) + (
            f"    tls:\n      ca_file: {tmp_path}/ca.pem\n      client_cert: {tmp_path}/client.pem\n"
            f"      client_key: ${{file:{tmp_path}/client.key}}\n"
        )
        without = _ROUTE.format(name="nocert", upstream=upstream) + f"    tls: {{ ca_file: {tmp_path}/ca.pem }}\n"
        sidecar = _start(tmp_path, "version: 1\nroutes:\n" + with_cert + without)
        try:
            answer = httpx.get(sidecar.proxy + "/mtls", trust_env=False)
            assert (answer.status_code, answer.content) == (200, b"hello over tls")
            _refused_with_the_cause_in_the_log_only(sidecar, "/nocert", "CERTIFICATE_REQUIRED")
            # The pooled connection made with the client certificate is not lent to the route without one.
            _refused_with_the_cause_in_the_log_only(sidecar, "/nocert", "CERTIFICATE_REQUIRED")
            assert httpx.get(sidecar.proxy + "/mtls", trust_env=False).status_code == 200
        finally:
            assert sidecar.stop() == 0
        assert not [line for line in sidecar.lines if "PRIVATE KEY" in line]


def test_a_private_ca_upstream_is_trusted_through_ca_file_and_refused_without(
    tmp_path: Path, pki: dict[str, trustme.CA]
) -> None:
    with https_upstream(_server_context(pki["server_ca"]), _KeptAlive) as upstream:
        trusted = _ROUTE.format(name="private", upstream=upstream) + f"    tls: {{ ca_file: {tmp_path}/ca.pem }}\n"
        untrusted = _ROUTE.format(name="system", upstream=upstream)
        sidecar = _start(tmp_path, "version: 1\nroutes:\n" + trusted + untrusted)
        try:
            answer = httpx.get(sidecar.proxy + "/private", trust_env=False)
            assert (answer.status_code, answer.content) == (200, b"hello over tls")
            _refused_with_the_cause_in_the_log_only(
                sidecar, "/system", "SSLCertVerificationError: unable to get local issuer certificate"
            )
        finally:
            assert sidecar.stop() == 0


def test_a_route_s_ca_file_replaces_the_system_cas_and_the_host_name_is_still_verified(
    tmp_path: Path, pki: dict[str, trustme.CA]
) -> None:
    other = trustme.CA()  # the upstream's certificate is from a CA the route does not name (the system trusts it)
    (tmp_path / "other.pem").write_bytes(other.cert_pem.bytes())
    wrong_host = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki["server_ca"].issue_cert("other.test").configure_cert(wrong_host)
    with https_upstream(_server_context(other)) as elsewhere, https_upstream(wrong_host) as misnamed:
        routes = _ROUTE.format(name="elsewhere", upstream=elsewhere) + f"    tls: {{ ca_file: {tmp_path}/ca.pem }}\n"
        routes += _ROUTE.format(name="misnamed", upstream=misnamed) + f"    tls: {{ ca_file: {tmp_path}/ca.pem }}\n"
        sidecar = _start(tmp_path, "version: 1\nroutes:\n" + routes, {"SSL_CERT_FILE": str(tmp_path / "other.pem")})
        try:
            _refused_with_the_cause_in_the_log_only(sidecar, "/elsewhere", "unable to get local issuer certificate")
            _refused_with_the_cause_in_the_log_only(sidecar, "/misnamed", "IP address mismatch")
        finally:
            assert sidecar.stop() == 0


_PROVIDER = """\
version: 1
providers:
  contoso:
    issuer: {issuer}
    audiences: [api://trigger-gateway]
{tls}routes:
  - name: guarded
    match: {{ path: /guarded }}
    upstream: {upstream}
    allow:
      - provider: contoso
"""


@pytest.fixture()
def https_issuer(tmp_path: Path, pki: dict[str, trustme.CA]) -> Iterator[tuple[DemoIssuer, ThreadServer]]:
    leaf = pki["server_ca"].issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "issuer.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "issuer.key"))
    issuers: list[DemoIssuer] = []

    def make_app(url: str) -> object:
        issuers.append(DemoIssuer(url, demo_clients()))
        return issuers[0].app()

    server = ThreadServer(make_app, tls=(str(tmp_path / "issuer.pem"), str(tmp_path / "issuer.key")))
    yield issuers[0], server
    server.stop()


def test_a_private_ca_issuer_serves_discovery_and_keys_through_the_provider_s_ca_file(
    tmp_path: Path, https_issuer: tuple[DemoIssuer, ThreadServer], upstream: ThreadServer
) -> None:
    issuer, server = https_issuer
    assert server.url.startswith("https://127.0.0.1:")
    text = _PROVIDER.format(
        issuer=issuer.issuer_url(CONTOSO_TENANT),
        upstream=upstream.url,
        tls=f"    tls: {{ ca_file: {tmp_path}/ca.pem }}\n",
    )
    sidecar = _start(tmp_path, text)  # ready: discovery and JWKS fetched over https from the private-CA issuer
    try:
        token = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", "oid": "caller"})
        answer = httpx.get(sidecar.proxy + "/guarded", headers={"Authorization": f"Bearer {token}"}, trust_env=False)
        assert answer.status_code == 200
        assert issuer.jwks_requests >= 1
    finally:
        assert sidecar.stop() == 0


def test_a_private_ca_issuer_without_the_provider_s_ca_file_gives_no_keys(
    tmp_path: Path, https_issuer: tuple[DemoIssuer, ThreadServer], upstream: ThreadServer
) -> None:
    issuer, _ = https_issuer
    text = _PROVIDER.format(issuer=issuer.issuer_url(CONTOSO_TENANT), upstream=upstream.url, tls="")
    sidecar = _start(tmp_path, text, ready=False)
    try:
        line = sidecar.wait_for_log("signing keys not fetched", provider="contoso")
        assert line["error"].endswith("SSLCertVerificationError: unable to get local issuer certificate")
        token = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", "oid": "caller"})
        answer = httpx.get(sidecar.proxy + "/guarded", headers={"Authorization": f"Bearer {token}"}, trust_env=False)
        assert (answer.status_code, answer.json()["reason"]) == (503, "keys_unavailable")
        assert issuer.jwks_requests == 0
        with httpx.Client(base_url=sidecar.admin, trust_env=False) as admin:
            assert sample(admin, "sidecar_jwks_refresh_total", provider="contoso", result="error") >= 1
    finally:
        assert sidecar.stop() == 0
