"""What the upstream never gets from a client, whatever the spelling: overrides of the method or URL, other
spellings of the client's address, X-Forwarded-* it did not set, framing headers spelled with `_`; and what
`Connection` cannot take away (pure: sidecar.upstream.target.request_headers)."""

from __future__ import annotations

import pytest

from sidecar.policy.model import Identity, IdentityHeaders
from sidecar.upstream.target import identity_header_values
from tests.support.headers import sent_upstream

LISA = Identity("contoso", {"oid": "o-1", "upn": "lisa@contoso.com"}, 0)


def _sent(
    pairs: list[tuple[str, str]], forward_token: bool = False, identity: Identity | None = LISA
) -> list[tuple[str, str]]:
    return sent_upstream(pairs, identity, forward_token, client_ip="1.2.3.4, 10.0.0.1", scheme="http")


def _values(sent: list[tuple[str, str]], name: str) -> list[str]:
    """Every value sent under this (lower-case) name."""
    return [value for key, value in sent if key == name]


NEVER_FORWARDED = [
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "x_http_method_override",
    "X-Original-Method",
    "X-Original-URL",
    "X-Original-URI",
    "X-Rewrite-URL",
    "Forwarded",
    "X-Real-IP",
    "X-Client-IP",
    "True-Client-IP",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X_Forwarded_For",
    "Content_Length",
    "Transfer_Encoding",
    "Expect",
    "expect",
]


@pytest.mark.parametrize("name", NEVER_FORWARDED)
def test_override_and_provenance_headers_are_never_forwarded(name: str) -> None:
    sent = _sent([(name, "spoofed"), ("X-Custom", "kept")])
    assert "spoofed" not in [value for _, value in sent]
    assert _values(sent, "x-custom") == ["kept"]


def test_underscored_names_of_ordinary_headers_pass() -> None:
    assert _values(_sent([("X_Custom_Thing", "1")]), "x_custom_thing") == ["1"]


def test_x_forwarded_for_is_the_value_given() -> None:
    assert _values(_sent([("X-Forwarded-For", "6.6.6.6")]), "x-forwarded-for") == ["1.2.3.4, 10.0.0.1"]


@pytest.mark.parametrize("forward_token", [False, True], ids=["stripped", "forwarded"])
def test_connection_cannot_name_the_token_away(forward_token: bool) -> None:
    sent = _sent([("Authorization", "Bearer t"), ("Connection", "Authorization")], forward_token=forward_token)
    assert _values(sent, "authorization") == (["Bearer t"] if forward_token else [])


def test_connection_cannot_name_the_body_length_away() -> None:
    sent = _sent([("Content-Length", "5"), ("Connection", "content-length, X-Hop"), ("X-Hop", "1")])
    assert (_values(sent, "content-length"), _values(sent, "x-hop")) == (["5"], [])


# The sidecar's own headers with the values it sets for LISA on this request, in the order it sends them.
SIDECAR_SET = [
    ("x-forwarded-for", "1.2.3.4, 10.0.0.1"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-host", "gw"),
    ("x-request-id", "rid-1"),
    ("x-auth-subject", "o-1"),
    ("x-auth-user", "lisa@contoso.com"),
    ("x-auth-provider", "contoso"),
]


def test_connection_cannot_remove_identity_forwarding_or_request_id() -> None:
    named = "X-Auth-Subject, x-auth_user, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Request-Id"
    assert _sent([("Connection", named), ("Host", "gw")]) == SIDECAR_SET


CLIENT_COPIES = [
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Request-Id",
    "X-Auth-Subject",
    "X-Auth-User",
    "X-Auth-Tenant",
    "X-Auth-Roles",
    "X-Auth-Provider",
]


@pytest.mark.parametrize("name", CLIENT_COPIES)
def test_a_client_copy_of_a_sidecar_header_never_goes_next_to_the_sidecars_own(name: str) -> None:
    """Compared as the list sent: a client's copy before the sidecar's would win at an upstream that reads the
    first occurrence, though a dict of the headers (the last value wins) shows only the sidecar's."""
    assert _sent([("Host", "gw"), (name, "spoofed")]) == SIDECAR_SET


def test_connection_names_headers_separated_by_commas_alone() -> None:
    sent = _sent([("Connection", "keep-alive,X-Hop"), ("X-Hop", "1"), ("Host", "gw")])
    assert sent == SIDECAR_SET


def test_forward_auth_sends_every_identity_header_empty_for_a_caller_without_identity() -> None:
    """An ingress copies these onto the request: empty values overwrite a client's own copies rather than keep them."""
    empty = identity_header_values(None, IdentityHeaders(), keep_empty=True)
    names = [b"x-auth-subject", b"x-auth-user", b"x-auth-tenant", b"x-auth-roles", b"x-auth-provider"]
    assert empty == [(name, b"") for name in names]


def test_expect_is_answered_by_the_sidecar_not_forwarded() -> None:
    sent = _sent([("Expect", "100-continue"), ("Content-Length", "5"), ("X-Custom", "kept")], identity=None)
    assert sent == [
        ("content-length", "5"),
        ("x-custom", "kept"),
        ("x-forwarded-for", "1.2.3.4, 10.0.0.1"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "rid-1"),
    ]
