"""Header rules, with raw bytes to a real sidecar process (no client library to tidy the request up): ambiguous
framing and doubled credentials are refused with 400, `Connection` cannot remove what the sidecar relies on, client
copies of identity, forwarding and method-override headers never reach the upstream, and X-Forwarded-For counts
only from a trusted proxy."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.limited import Limited
from tests.support.metrics import rejections
from tests.support.rawsock import head, send_raw

OID = "aaaaaaaa-0000-0000-0000-00000000000a"


@pytest.fixture()
def admin(limited: Limited) -> Iterator[httpx.Client]:  # the limits sidecar's (tests/integration/conftest.py)
    with httpx.Client(base_url=limited.sidecar.admin, timeout=30, trust_env=False) as http:
        yield http


def _token(issuer: DemoIssuer) -> str:
    return issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", "oid": OID, "upn": "lisa@contoso.com"})


CONFLICTS = {
    # Read by the gate: framing is clear, but which Host or credential would the upstream believe?
    "two-hosts": (b"Host: other\r\n", "conflicting_headers"),
    "two-authorizations": (b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n", "conflicting_headers"),
    "transfer-coding-not-chunked": (b"Transfer-Encoding: gzip, chunked\r\n", "conflicting_headers"),
    # Refused by the HTTP parser before any application code runs; answered and counted by the sidecar.
    "two-content-lengths": (b"Content-Length: 0\r\nContent-Length: 0\r\n", "bad_request"),
    "differing-content-lengths": (b"Content-Length: 0\r\nContent-Length: 5\r\n", "bad_request"),
    "content-length-list": (b"Content-Length: 0, 0\r\n", "bad_request"),
    "content-length-and-chunked": (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "bad_request"),
    "chunked-and-content-length": (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "bad_request"),
    "two-transfer-encodings": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "bad_request"),
    "space-before-colon": (b"Content-Length : 5\r\n", "bad_request"),
    "folded-header": (b"X-A: a\r\n b\r\n", "bad_request"),
}


@pytest.mark.parametrize(("lines", "reason"), CONFLICTS.values(), ids=CONFLICTS.keys())
def test_ambiguous_heads_are_refused_with_400_and_never_forwarded(
    lines: bytes, reason: str, request: pytest.FixtureRequest, limited: Limited, admin: httpx.Client
) -> None:
    path = "/small/" + request.node.callspec.id
    before = rejections(admin, "(none)", reason)
    data = f"POST {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n".encode() + lines + b"\r\n0\r\n\r\n"
    reply = send_raw(limited.url, data)
    assert (reply.status, reply.headers["content-type"]) == (400, "application/problem+json")
    assert reply.json()["reason"] == reason
    assert rejections(admin, "(none)", reason) == before + 1
    limited.sidecar.wait_for_log("request", 10, request_id=reply.json()["request_id"], status=400, reason=reason)
    assert limited.recorder.at(path) == []


def test_connection_cannot_strip_a_forwarded_token(limited: Limited, issuer: DemoIssuer) -> None:
    token = _token(issuer)
    headers = [("Authorization", f"Bearer {token}"), ("Connection", "close, authorization")]
    echo = send_raw(limited.url, head("POST", "/passthrough", headers)).json()["headers"]
    assert echo["authorization"] == f"Bearer {token}"


def test_connection_cannot_remove_what_the_sidecar_reads_or_sets(limited: Limited, issuer: DemoIssuer) -> None:
    named = "close, authorization, x-request-id, x-forwarded-for, x-auth-subject, content-length, host"
    headers = [
        ("Authorization", f"Bearer {_token(issuer)}"),
        ("Connection", named),
        ("X-Request-Id", "named-in-connection"),
        ("Content-Length", "5"),
    ]
    reply = send_raw(limited.url, head("POST", "/token", headers) + b"hello")
    assert reply.status == 200  # the gate still read the token
    assert reply.values("x-request-id") == ["named-in-connection"]  # every copy: the upstream's is dropped
    echo = reply.json()
    assert "authorization" not in echo["headers"]  # not forwarded on this route, named or not
    assert echo["headers"]["x-request-id"] == "named-in-connection"
    assert echo["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert echo["headers"]["x-auth-subject"] == OID
    assert echo["body_bytes"] == 5


SPOOFS = [
    ("X-Auth_User", "admin@contoso.com"),  # oauth2-proxy CVE-2025-64484: `_` read as `-` upstream
    ("x-auth-user", "admin@contoso.com"),
    ("X-AUTH-SUBJECT", "admin"),
    ("X_Auth_Roles", "Payroll.Invoke"),
    ("X-Auth-Provider", "admin"),
]


@pytest.mark.parametrize("path", ["/token", "/echo/anyone"], ids=["authenticated", "anyone"])
def test_client_copies_of_identity_headers_are_stripped_in_every_spelling(
    path: str, limited: Limited, issuer: DemoIssuer
) -> None:
    headers = [("Authorization", f"Bearer {_token(issuer)}"), ("Connection", "close"), *SPOOFS]
    echo = send_raw(limited.url, head("POST", path, headers)).json()["headers"]
    assert "admin" not in " ".join(echo.values()) and "Payroll.Invoke" not in " ".join(echo.values())
    assert not any("_" in name for name in echo)
    expected = {"x-auth-subject": OID, "x-auth-user": "lisa@contoso.com", "x-auth-provider": "contoso"}
    expected["x-auth-tenant"] = CONTOSO_TENANT
    assert {name: value for name, value in echo.items() if name.startswith("x-auth")} == (
        expected if path == "/token" else {}
    )


OVERRIDES = [
    ("X-HTTP-Method-Override", "DELETE"),
    ("X-HTTP-Method", "DELETE"),
    ("X-Method-Override", "DELETE"),
    ("X_HTTP_Method_Override", "DELETE"),
    ("X-Original-Method", "DELETE"),
    ("X-Original-URL", "/admin"),
    ("X-Rewrite-URL", "/admin"),
    ("Forwarded", "for=6.6.6.6;proto=https"),
    ("X-Real-IP", "6.6.6.6"),
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("Content_Length", "99"),
    ("Transfer_Encoding", "chunked"),
]


def test_method_and_url_overrides_never_reach_the_upstream(limited: Limited) -> None:
    echo = send_raw(limited.url, head("GET", "/echo/override", [("Connection", "close"), *OVERRIDES])).json()
    assert echo["method"] == "GET" and echo["path"] == "/override"
    sent = {name for name, _ in OVERRIDES}
    assert not {name.lower() for name in sent} & set(echo["headers"])
    assert "DELETE" not in echo["headers"].values() and "/admin" not in echo["headers"].values()


FORWARDED = {
    # source address, X-Forwarded-For lines received -> X-Forwarded-For upstream, client_ip logged
    "untrusted-peer": ("127.0.0.1", ["6.6.6.6"], "127.0.0.1", "127.0.0.1"),
    "untrusted-peer-no-header": ("127.0.0.1", [], "127.0.0.1", "127.0.0.1"),
    "trusted-peer": ("127.0.0.2", ["6.6.6.6, 1.2.3.4"], "6.6.6.6, 1.2.3.4, 127.0.0.2", "1.2.3.4"),
    "trusted-chain": ("127.0.0.2", ["6.6.6.6, 1.2.3.4, 10.0.0.7"], "6.6.6.6, 1.2.3.4, 10.0.0.7, 127.0.0.2", "1.2.3.4"),
    "two-header-lines": ("127.0.0.2", ["6.6.6.6", "1.2.3.4"], "6.6.6.6, 1.2.3.4, 127.0.0.2", "1.2.3.4"),
    "all-trusted": ("127.0.0.2", ["10.0.0.8, 10.0.0.7"], "10.0.0.8, 10.0.0.7, 127.0.0.2", "10.0.0.8"),
    "garbage-stops-the-walk": (
        "127.0.0.2",
        ["1.2.3.4, junk, 10.0.0.7"],
        "1.2.3.4, junk, 10.0.0.7, 127.0.0.2",
        "10.0.0.7",
    ),
    "trusted-peer-no-header": ("127.0.0.2", [], "127.0.0.2", "127.0.0.2"),
}


@pytest.mark.parametrize(("source", "received", "sent", "client_ip"), FORWARDED.values(), ids=FORWARDED.keys())
def test_x_forwarded_for_counts_only_from_trusted_proxies(
    source: str, received: list[str], sent: str, client_ip: str, request: pytest.FixtureRequest, limited: Limited
) -> None:
    rid = "xff-" + request.node.callspec.id
    headers = [("Connection", "close"), ("X-Request-Id", rid), *(("X-Forwarded-For", value) for value in received)]
    echo = send_raw(limited.url, head("GET", "/echo/xff", headers), source=source).json()
    assert echo["headers"]["x-forwarded-for"] == sent
    assert limited.sidecar.wait_for_log("request", 10, request_id=rid)["client_ip"] == client_ip
