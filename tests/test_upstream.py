"""What goes upstream: target URLs, the query rule and header hygiene (pure functions)."""

from __future__ import annotations

import pytest

from sidecar.policy.model import Identity, IdentityHeaders
from sidecar.upstream.target import (
    identity_header_values,
    query_params,
    request_headers,
    response_headers,
    shadows,
    target,
    target_url,
)
from tests.support.headers import sent_upstream

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
    "sig-letters-with-a-plus-dropped": (TRIGGER, "", b"s+ig=a&id=7", TRIGGER + "&id=7"),
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
    sent = sent_upstream([("X-Auth-User", "admin"), ("x-auth_subject", "admin"), ("X-AUTH-ROLES", "Admin")], LISA)
    assert sent == FORWARDING + LISA_HEADERS


def test_identity_headers_are_removed_without_identity() -> None:
    assert sent_upstream([("X-Auth-User", "admin"), ("X-Auth_Roles", "x")]) == FORWARDING


@pytest.mark.parametrize("forward", [False, True], ids=["stripped", "forwarded"])
def test_authorization_only_with_forward_token(forward: bool) -> None:
    sent = sent_upstream([("Authorization", "Bearer t")], LISA, forward_token=forward)
    assert sent == [("authorization", "Bearer t")] * forward + FORWARDING + LISA_HEADERS


def test_connection_cannot_remove_what_the_sidecar_sets() -> None:
    client = [("Connection", "X-Auth-User, X-Forwarded-For, X-Request-Id, X-Custom"), ("X-Custom", "1")]
    assert sent_upstream(client, LISA) == FORWARDING + LISA_HEADERS


def test_client_forwarded_headers_are_replaced() -> None:
    sent = sent_upstream([("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-Proto", "gopher"), ("Host", "gw")])
    assert sent == [*FORWARDING[:2], ("x-forwarded-host", "gw"), FORWARDING[2]]


def test_hop_by_hop_request_headers_are_dropped() -> None:
    hop = ("Keep-Alive", "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Proxy-Connection")
    sent = sent_upstream([*((name, "x") for name in hop), ("Content-Type", "application/json")])
    assert sent == [("content-type", "application/json"), *FORWARDING]


def test_claim_values_cannot_inject_header_lines() -> None:
    identity = Identity("p", {"sub": "a\r\nX-Evil: 1"}, 0)
    sent = request_headers(
        [], forward_token=False, names=IdentityHeaders(), identity=identity, client_ip="", scheme="http", request_id="r"
    )
    assert [value for name, value in sent if name == b"x-auth-subject"] == [b"a  X-Evil: 1"]


# Every control character (C0 with NUL, DEL, C1) in a claim: RFC 9110 §5.5 allows none in a field value, a C parser
# cuts the value at a NUL (`admin@corp.com\0x` read as `admin@corp.com`), and the listener refuses to send them.
CONTROLS = "".join(map(chr, [*range(0x20), 0x7F, *range(0x80, 0xA0)]))


def test_claim_values_keep_their_letters_and_other_spaces() -> None:
    """Only the blanks that stood for control characters, and the ends' spaces, are trimmed: a user named Xavier
    keeps his X, a name ending in an ideographic space keeps it."""
    claims = {"sub": " Xavier X ", "upn": "Xavier X\u3000"}
    assert identity_header_values(Identity("p", claims, 0), IdentityHeaders()) == [
        (b"x-auth-subject", b"Xavier X"),
        (b"x-auth-user", "Xavier X\u3000".encode()),
        (b"x-auth-provider", b"p"),
    ]


@pytest.mark.parametrize("keep_empty", [False, True], ids=["proxy", "forward-auth"])
def test_claim_values_carry_no_control_character(keep_empty: bool) -> None:
    claims = {
        "sub": "a\x00b",
        "upn": "\x00lisa\x7f@contoso.com\x85\r\n",
        "tid": "t" + CONTROLS + "u",
        "roles": ["R\x00", "W\x1b"],
    }
    headers = identity_header_values(Identity("p", claims, 0), IdentityHeaders(), keep_empty=keep_empty)
    assert headers == [
        (b"x-auth-subject", b"a b"),
        (b"x-auth-user", b"lisa @contoso.com"),
        (b"x-auth-tenant", b"t" + b" " * len(CONTROLS) + b"u"),
        (b"x-auth-roles", b"R ,W"),
        (b"x-auth-provider", b"p"),
    ]


def test_response_hop_by_hop_and_connection_named_headers_are_dropped() -> None:
    upstream = [
        (b"Content-Type", b"text/plain"),
        (b"Connection", b"X-Internal"),
        (b"X-Internal", b"1"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Request-Id", b"theirs"),
    ]
    assert response_headers(upstream) == [(b"Content-Type", b"text/plain")]


# Response headers named so that a lenient parser reads `_` as `-` (and ignores case): framing and hop-by-hop.
UNDERSCORED = [
    (b"Content_Length", b"99"),
    (b"content_length", b"99"),
    (b"CONTENT_LENGTH", b"99"),
    (b"Transfer_Encoding", b"chunked"),
    (b"Keep_Alive", b"timeout=5"),
    (b"Proxy_Connection", b"keep-alive"),
    (b"Proxy_Authenticate", b"Basic"),
    (b"X_Request_Id", b"theirs"),
]


def test_response_framing_and_hop_by_hop_headers_spelled_with_underscores_are_dropped() -> None:
    upstream = [(b"Content-Length", b"2"), *UNDERSCORED, (b"X_Custom_Thing", b"kept"), (b"ETag", b'"a"')]
    assert response_headers(upstream) == [(b"Content-Length", b"2"), (b"X_Custom_Thing", b"kept"), (b"ETag", b'"a"')]


BODILESS = {
    # status, answers HEAD -> what is left of [Content-Length: 10, ETag] (RFC 9110 §8.6: never on 204; on 304 it may
    # be sent, but the listener would then wait for those bytes, so it is left out there unless it answers HEAD)
    "200-keeps-its-length": (200, False, [(b"Content-Length", b"10"), (b"ETag", b'"a"')]),
    "204-has-no-length": (204, False, [(b"ETag", b'"a"')]),
    "304-has-no-length": (304, False, [(b"ETag", b'"a"')]),
    "205-keeps-its-length": (205, False, [(b"Content-Length", b"10"), (b"ETag", b'"a"')]),
    "head-200-keeps-its-length": (200, True, [(b"Content-Length", b"10"), (b"ETag", b'"a"')]),
    "head-204-has-no-length": (204, True, [(b"ETag", b'"a"')]),
    "head-304-keeps-its-length": (304, True, [(b"Content-Length", b"10"), (b"ETag", b'"a"')]),
}


def test_a_304_is_taken_as_the_answer_to_a_get_unless_told_otherwise() -> None:
    assert response_headers([(b"Content-Length", b"5"), (b"ETag", b'"a"')], 304) == [(b"ETag", b'"a"')]


@pytest.mark.parametrize(("status", "head", "expected"), BODILESS.values(), ids=BODILESS.keys())
def test_no_content_length_on_204_and_304(status: int, head: bool, expected: list[tuple[bytes, bytes]]) -> None:
    assert response_headers([(b"Content-Length", b"10"), (b"ETag", b'"a"')], status, head=head) == expected


# A client parameter some framework reads as the upstream's own `sig` (or `api-version`, `sp`): each spelling.
SHADOWS = {
    "exact": b"sig=x",
    "upper-case": b"SIG=x",
    "mixed-case": b"sIg=x",
    "percent-encoded-letter": b"%73ig=x",
    "percent-encoded-upper": b"%53%49%47=x",
    "double-encoded": b"%2573ig=x",
    "php-array": b"sig[]=x",
    "php-array-index": b"sig[0]=x",
    "php-array-encoded": b"sig%5B%5D=x",
    "unclosed-bracket": b"sig[=x",
    "leading-space-encoded": b"%20sig=x",
    "leading-plus": b"+sig=x",
    "trailing-space": b"sig%20=x",
    "trailing-plus": b"sig+=x",
    "leading-tab": b"%09sig=x",
    "trailing-dot": b"sig.=x",
    "trailing-underscore": b"sig_=x",
    "leading-underscore": b"_sig=x",
    "nul-truncated": b"sig%00=x",
    "nul-then-more": b"sig%00anything=x",
    "nul-twice": b"sig%00a%00b=x",
    "semicolon-separated": b"x=1;sig=x",
    "semicolon-first": b"sig=x;y=2",
    "long-s": b"%C5%BFig=x",
    "dotless-i": b"s%C4%B1g=x",
    "fullwidth": b"%EF%BD%93%EF%BD%89%EF%BD%87=x",
    "raw-utf8-long-s": b"\xc5\xbfig=x",
    "other-upstream-name": b"API-Version=1",
    "other-name-trailing-dot": b"sp.=x",
    # .NET (System.Web) decodes the non-standard %uXXXX escape, also after one more decoding
    "percent-u-escape": b"%u0073ig=x",
    "percent-u-upper-case": b"%U0073ig=x",
    "percent-u-last-letter": b"si%u0067=x",
    "percent-u-encoded-again": b"%25u0073ig=x",
    # Rack < 3 strips leading brackets (`[sig]`, `]sig`, `[]sig` are `sig`)
    "rack-brackets-around": b"[sig]=x",
    "rack-leading-close-bracket": b"]sig=x",
    "rack-leading-empty-brackets": b"[]sig=x",
    "rack-brackets-then-an-index": b"[sig][a]=x",
    # servers that decode the whole query before splitting it
    "encoded-ampersand-in-the-name": b"x%26sig=x",
    "encoded-equals-in-the-name": b"sig%3Dx",
    "encoded-pair-in-the-value": b"x=%26sig%3Dx",
    "encoded-semicolon-pair-in-the-value": b"x=1%3Bsig%3Dx",
    "encoded-twice-pair-in-the-value": b"x=%2526sig%253Dx",
    "encoded-whole-pair": b"%73%69%67%3dx",
    "encoded-pair-in-the-name": b"x%3D1%26sig%3Dx",
    # invisible or control characters around the name, and letters with a mark
    "zero-width-space-after": b"sig%E2%80%8B=x",
    "zero-width-space-before": b"%E2%80%8Bsig=x",
    "byte-order-mark-before": b"%EF%BB%BFsig=x",
    "byte-order-mark-after": b"sig%EF%BB%BF=x",
    "control-byte": b"sig%01=x",
    "del": b"sig%7f=x",
    "combining-mark": b"s%CC%81ig=x",
    "overlong-nul": b"sig%C0%80=x",
    # the same letters and digits in any other spelling
    "dash-inside": b"s-ig=x",
    "plus-inside": b"s+ig=x",
    "other-name-underscore-for-dash": b"api_version=1",
    "other-name-letters-only": b"apiversion=1",
}


@pytest.mark.parametrize("pair", SHADOWS.values(), ids=SHADOWS.keys())
def test_a_client_parameter_read_as_an_upstream_one_is_dropped(pair: bytes) -> None:
    assert target_url(target(TRIGGER), "", pair + b"&id=7") == TRIGGER + "&id=7"


KEPT = {
    "other-name": b"signal=1",
    "name-inside": b"xsig=1",
    "value-is-sig": b"name=sig",
    "empty-name": b"=sig",
    "other-letter-with-a-mark": b"sig%C3%A9=1",
    "encoded-ampersand-in-a-value": b"q=a%26b",
    "encoded-url-in-a-value": b"next=%2Fx%3Fsig%3D1",
    "encoded-equals-before-the-name": b"a%3Dsig=1",
    "encoded-three-times": b"q=%252541",
    "php-nested-array-of-another-name": b"s[v][x]=1",  # PHP reads `s`, not the upstream's `sv`
    "percent-u-lone-surrogate": b"%uD800=1",
    "percent-u-surrogate-pair": b"%uD83D%uDE00=1",
}


@pytest.mark.parametrize("pair", KEPT.values(), ids=KEPT.keys())
def test_other_client_parameters_still_reach_the_upstream(pair: bytes) -> None:
    assert target_url(target(TRIGGER), "", pair) == TRIGGER + "&" + pair.decode("latin-1")


def test_a_parameter_still_encoded_after_eight_decodings_is_dropped() -> None:
    # No client means a name or value escaped nine times over; reading it would cost a decoding per level.
    nine, eight = b"q=%" + b"25" * 8 + b"41", b"q=%" + b"25" * 7 + b"41"  # `A` escaped nine and eight times
    assert target_url(target(TRIGGER), "", nine + b"&id=7") == TRIGGER + "&id=7"
    assert target_url(target(TRIGGER), "", eight + b"&id=7") == TRIGGER + "&" + eight.decode() + "&id=7"


def test_an_upstream_parameter_named_in_unicode_is_protected_too() -> None:
    """A policy may write the upstream's parameter name with characters outside Latin-1 (`ſig`, read as `sig`)."""
    upstream = target("http://h/x?\u017fig=SECRET1")
    assert target_url(upstream, "", b"sig=1&SIG=2&ok=1") == "http://h/x?\u017fig=SECRET1&ok=1"


def test_an_upstream_parameter_without_letters_shadows_only_names_without_letters() -> None:
    """An upstream `_` (a cache buster) has an empty skeleton: `[x]` and `_` are read as it, `a[b]` is not."""
    upstream = target("http://h/x?_=CACHE&sig=S")
    assert target_url(upstream, "", b"a[b]=1&X]sig=2&[x]=3&__=4") == "http://h/x?_=CACHE&sig=S&a[b]=1&X]sig=2"


def test_an_upstream_value_with_its_padding_written_raw_keeps_its_name() -> None:
    """`sig=...==`: the name is what comes before the first `=` (base64 padding is part of the value)."""
    upstream = target("https://h.example/x?sig=Qz9+k3Yv/0aRmN4sPc==")
    assert target_url(upstream, "", b"sig=1&ok=2") == "https://h.example/x?sig=Qz9+k3Yv/0aRmN4sPc==&ok=2"


def test_php_reads_dots_and_spaces_in_upstream_names_as_underscores() -> None:
    upstream = target("http://h/x?api_key=SECRET-VALUE")
    for pair in (b"api.key=1", b"api+key=1", b"api%20key=1", b"API_KEY[]=1"):
        assert target_url(upstream, "", pair) == "http://h/x?api_key=SECRET-VALUE", pair


QUERY_PARAMS = {
    "no-query": (b"", 0),
    "one-pair": (b"a=1", 1),
    "pairs-between-ampersands": (b"a=1&b=2&c", 3),
    "empty-pairs-count": (b"&&", 3),
    "each-semicolon": (b"a=1;b=2;c", 3),
    "escapes-that-decode-to-a-separator": (b"a=%26%3B%3b%u0026%U003B%u003b", 7),
    "escapes-that-decode-to-a-percent": (b"a=%25%u0025", 3),
    "a-percent-no-escape-starts": (b"a=%%2%zz%u12", 5),
    "other-escapes-cost-nothing": (b"a=%E4%b8%2F%41%uFF06%U00e9%u2026", 1),
    "near-misses-are-inert": (b"a=%24%27%3A%3C%2b%u0024%u0027%u003A", 1),
}


@pytest.mark.parametrize(("query", "count"), QUERY_PARAMS.values(), ids=QUERY_PARAMS.keys())
def test_query_params_counts_every_parameter_the_rule_may_read(query: bytes, count: int) -> None:
    assert query_params(query) == count


PLAIN = frozenset({"sig", "apiversion", ""})
FAST_PATH = {
    "a-name-as-written": ("sig=1", True),
    "upper-case": ("SIG=1", True),
    "dash": ("api-version=1", True),
    "an-ampersand-in-the-value-is-read": ("q=1&sig=2", True),
    "dash-and-dot": ("API-ver.sion=2", True),
    "underscore": ("_s_i_g_", True),
    "no-value": ("sig", True),
    "value-with-equals": ("sig==x=", True),
    "another-name": ("signal=1", False),
    "x-is-a-letter": ("X.sig=1", False),
    "digits-are-kept": ("sig1=1", False),
    "no-letters-is-the-empty-name": ("._-=1", True),
    "an-empty-pair-is-no-parameter": ("", False),
    "non-ascii-value": ("q=\u00e9\u00ff", False),
    "a-semicolon-in-the-value-is-read": ("q=1;sig=2", True),
}


@pytest.mark.parametrize(("pair", "dropped"), FAST_PATH.values(), ids=FAST_PATH.keys())
def test_plain_pairs_are_read_as_their_letters_and_digits(pair: str, dropped: bool) -> None:
    assert shadows(pair, PLAIN) is dropped
