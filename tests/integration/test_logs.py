"""One access line per request, with the fields operators read, and never a token or a secret."""

from __future__ import annotations

from pathlib import Path

import httpx

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.servers import SidecarProcess, ThreadServer

LISA = {"oid": "aaaaaaaa-0000-0000-0000-00000000000a", "upn": "lisa@contoso.com", "azp": "app-123"}


def test_allowed_request_line(sidecar: SidecarProcess, client: httpx.Client, issuer: DemoIssuer) -> None:
    token = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", **LISA})
    response = client.post(
        "/flows/user-lookup?x=1",
        headers={"Authorization": f"Bearer {token}", "X-Request-Id": "log-allowed-1"},
        content=b"12345",
    )
    assert response.status_code == 200
    line = sidecar.wait_for_log("request", request_id="log-allowed-1")
    assert line["logger"] == "sidecar.access" and line["level"] == "info"
    assert line["method"] == "POST" and line["path"] == "/flows/user-lookup"  # the path without the query
    assert line["route"] == "user-lookup" and line["mode"] == "enforce"
    assert line["decision"] == "allow" and line["status"] == 200 and "reason" not in line
    assert line["provider"] == "contoso" and line["subject"] == LISA["oid"] and line["app"] == "app-123"
    assert line["client_ip"] == "127.0.0.1"
    assert line["bytes_in"] == 5 and line["bytes_out"] == len(response.content)
    assert line["auth_ms"] >= 0 and line["upstream_ms"] >= 0 and line["duration_ms"] >= line["upstream_ms"]
    assert "upn" not in line and "x=1" not in str(line)


def test_refused_request_line(sidecar: SidecarProcess, client: httpx.Client) -> None:
    response = client.post(
        "/flows/payroll", headers={"Authorization": "Bearer eyJhbGciOi.not.valid", "X-Request-Id": "log-refused-1"}
    )
    assert response.status_code == 401
    line = sidecar.wait_for_log("request", request_id="log-refused-1")
    assert line["decision"] == "reject" and line["reason"] == "malformed_token" and line["status"] == 401
    assert "provider" not in line and "subject" not in line  # nothing unverified


def test_text_format(tmp_path: Path, upstream: ThreadServer) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nroutes:\n"
        f"  - name: open\n    match: {{ path: /x }}\n    upstream: {upstream.url}\n    allow: anyone\n"
    )
    sidecar = SidecarProcess(policy, {}, ("--drain-delay", "0", "--log-format", "text")).start()
    try:
        assert httpx.get(sidecar.proxy + "/x", headers={"X-Request-Id": "text-1"}, trust_env=False).status_code == 200
        line = sidecar.wait_for_line(lambda text: "request_id=text-1" in text)
        assert " info    request " in line and "route=open" in line and "status=200" in line
    finally:
        assert sidecar.stop() == 0


# A claim that tries to end the access line and write one of its own: CR LF, a forged line, a quote and `key=`
# spellings that would read as fields, C1 NEL and U+2028 (line breaks to some log viewers), and a bidi override.
FORGED = "2026-01-01T00:00:00.000Z info    request request_id=forged route=payroll decision=allow status=200"
SNEAKY_SUBJECT = f"lisa\r\n{FORGED}"
SNEAKY_APP = 'app" decision=allow x=\x85y\u2028z\u202e\\'


def test_text_lines_escape_claims_so_no_line_can_be_forged(
    tmp_path: Path, upstream: ThreadServer, issuer_server: tuple[DemoIssuer, ThreadServer]
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nproviders:\n  contoso:\n"
        f"    issuer: {issuer_server[1].url}/{CONTOSO_TENANT}/v2.0\n    audiences: [api://trigger-gateway]\n"
        f"routes:\n  - name: logged\n    match: {{ path: /x }}\n    upstream: {upstream.url}\n"
        "    allow: [{ provider: contoso }]\n"
    )
    token = issuer_server[0].mint(
        CONTOSO_TENANT, {"aud": "api://trigger-gateway", "oid": SNEAKY_SUBJECT, "azp": SNEAKY_APP}
    )
    sidecar = SidecarProcess(policy, {}, ("--drain-delay", "0", "--log-format", "text")).start()
    try:
        headers = {"Authorization": f"Bearer {token}", "X-Request-Id": "text-forge-1"}
        httpx.get(sidecar.proxy + "/x", headers=headers, trust_env=False)
        line = sidecar.wait_for_line(lambda text: "request_id=text-forge-1" in text)
    finally:
        assert sidecar.stop() == 0
    assert [text for text in sidecar.lines if "forged" in text] == [line]  # one line, and no forged one
    assert not any(text.startswith("2026-01-01T") for text in sidecar.lines)
    assert r'subject="lisa\r\n2026-01-01T00:00:00.000Z info    request request_id=forged route=payroll' in line
    assert r' app="app\" decision=allow x=\x85y\u2028z\u202e\\" ' in line + " "
    assert line.isprintable()
