"""What goes upstream: target URLs, the query rule and header hygiene (pure functions)."""

from __future__ import annotations

import pytest

from sidecar.policy.model import Identity, IdentityHeaders
from sidecar.upstream import request_headers, response_headers, target, target_url

TRIGGER = (
    "https://prod-1.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke"
    "?api-version=2016-10-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=SECRET"
)

URLS = {
    "exact-as-written": (TRIGGER, "", b"", TRIGGER),
    "client-param-appended": (TRIGGER, "", b"id=7", TRIGGER + "&id=7"),
    "sig-dropped": (TRIGGER, "", b"sig=evil&id=7", TRIGGER + "&id=7"),
    "sig-any-case-dropped": (TRIGGER, "", b"SIG=a&sIg=b&Sp=c", TRIGGER),
    "sig-percent-encoded-dropped": (TRIGGER, "", b"%53ig=a&%73%69%67=b", TRIGGER),
    "sig-plus-in-name-not-confused": (TRIGGER, "", b"s+ig=a", TRIGGER + "&s+ig=a"),
    "empty-pairs-skipped": (TRIGGER, "", b"&&x=1&", TRIGGER + "&x=1"),
    "prefix-rest-appended": ("http://127.0.0.1:8081", "/status/a", b"", "http://127.0.0.1:8081/status/a"),
    "prefix-rest-with-base-path": ("http://h/api/", "/x", b"q=1", "http://h/api/x?q=1"),
    "prefix-no-rest": ("http://h/api", "", b"", "http://h/api"),
    "bare-origin": ("http://h", "", b"", "http://h/"),
}


@pytest.mark.parametrize(("upstream", "rest", "query", "expected"), URLS.values(), ids=URLS.keys())
def test_target_url(upstream: str, rest: str, query: bytes, expected: str) -> None:
    assert target_url(target(upstream), rest, query) == expected


# What an operator's upstream URL and a client's query become, at the edges of the rule (each row once let a
# changed rule pass: make mutate).
URL_EDGES = {
    "upstream-path-trailing-slash-kept-without-rest": ("http://h/api/", "", b"", "http://h/api/"),
    "upstream-path-letters-kept-before-rest": ("http://h/apiX", "/y", b"", "http://h/apiX/y"),
    "client-params-joined-with-ampersands": ("http://h/p", "", b"a=1&b=2", "http://h/p?a=1&b=2"),
    "a-name-is-cut-at-the-first-equals-sign": (TRIGGER, "", b"sig=a=b&id=7", TRIGGER + "&id=7"),
    "a-name-that-is-not-utf8-is-kept-not-an-error": (TRIGGER, "", b"%FF=1", TRIGGER + "&%FF=1"),
}


@pytest.mark.parametrize(("upstream", "rest", "query", "expected"), URL_EDGES.values(), ids=URL_EDGES.keys())
def test_target_url_edges(upstream: str, rest: str, query: bytes, expected: str) -> None:
    assert target_url(target(upstream), rest, query) == expected


def test_redacted_target_hides_the_query() -> None:
    assert "SECRET" not in target(TRIGGER).redacted()


def _headers(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in pairs]


def _forward(
    client: list[tuple[bytes, bytes]], identity: Identity | None = None, forward_token: bool = False
) -> list[tuple[str, str]]:
    """Every header sent upstream, in order: a list, so a client's copy next to the sidecar's own is seen."""
    out = request_headers(
        client,
        forward_token=forward_token,
        names=IdentityHeaders(),
        identity=identity,
        client_ip="10.0.0.9",
        scheme="https",
        request_id="rid-1",
    )
    return [(name.decode(), value.decode()) for name, value in out]


LISA = Identity(
    "contoso", {"oid": "o-1", "sub": "s-1", "upn": "lisa@contoso.com", "tid": "t-1", "roles": ["A", "B"]}, 0
)
# What the sidecar sets on every request here, in the order it sends them; LISA's identity follows when verified.
FORWARDING = [("x-forwarded-for", "10.0.0.9"), ("x-forwarded-proto", "https"), ("x-request-id", "rid-1")]
LISA_HEADERS = [
    ("x-auth-subject", "o-1"),
    ("x-auth-user", "lisa@contoso.com"),
    ("x-auth-tenant", "t-1"),
    ("x-auth-roles", "A,B"),
    ("x-auth-provider", "contoso"),
]


def test_identity_headers_come_from_the_verified_identity_only() -> None:
    sent = _forward(_headers(("X-Auth-User", "admin"), ("x-auth_subject", "admin"), ("X-AUTH-ROLES", "Admin")), LISA)
    assert sent == FORWARDING + LISA_HEADERS


def test_identity_headers_are_removed_without_identity() -> None:
    assert _forward(_headers(("X-Auth-User", "admin"), ("X-Auth_Roles", "x"))) == FORWARDING


@pytest.mark.parametrize("forward", [False, True], ids=["stripped", "forwarded"])
def test_authorization_only_with_forward_token(forward: bool) -> None:
    sent = _forward(_headers(("Authorization", "Bearer t")), LISA, forward_token=forward)
    assert sent == [("authorization", "Bearer t")] * forward + FORWARDING + LISA_HEADERS


def test_connection_cannot_remove_what_the_sidecar_sets() -> None:
    client = _headers(("Connection", "X-Auth-User, X-Forwarded-For, X-Request-Id, X-Custom"), ("X-Custom", "1"))
    assert _forward(client, LISA) == FORWARDING + LISA_HEADERS


def test_client_forwarded_headers_are_replaced() -> None:
    sent = _forward(_headers(("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "gopher"), ("Host", "gw")))
    assert sent == [*FORWARDING[:2], ("x-forwarded-host", "gw"), FORWARDING[2]]


def test_hop_by_hop_request_headers_are_dropped() -> None:
    hop = ("Keep-Alive", "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection")
    sent = _forward(_headers(*((name, "x") for name in hop), ("Content-Type", "application/json")))
    assert sent == [("content-type", "application/json"), *FORWARDING]


def test_claim_values_cannot_inject_header_lines() -> None:
    identity = Identity("p", {"sub": "a\r\nX-Evil: 1"}, 0)
    sent = request_headers(
        [], forward_token=False, names=IdentityHeaders(), identity=identity, client_ip="", scheme="http", request_id="r"
    )
    assert [value for name, value in sent if name == b"x-auth-subject"] == [b"a  X-Evil: 1"]


def test_response_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    upstream = [
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"X-Internal"),
        (b"X-Internal", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Request-Id", b"theirs"),
    ]
    assert response_headers(upstream) == [(b"Content-Type", b"text/plain")]
