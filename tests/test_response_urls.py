"""Response headers that name the upstream's URL, as the client sees them (pure: sidecar.response_urls): rewritten to
the route's public path without the upstream's query, dropped outside the route, and no header with the secret."""

from __future__ import annotations

import pytest

from sidecar.response_urls import ResponseUrls, response_urls
from sidecar.upstream import response_headers


def shown(rules: ResponseUrls, name: bytes, value: bytes, url: str = "") -> bytes | None:
    """What the client gets of this one upstream header, or None."""
    kept = response_headers([(name, value)], 200, rules, url)
    assert len(kept) <= 1
    return kept[0][1] if kept else None


HOST = "prod-1.westeurope.logic.azure.com"
SIG = "Qz9%2Bk3Yv%2F0aRmN4sPcE5bL8dHjU2fGiO1yT6wQ%3D"  # as written in the URL; decoded: Qz9+k3Yv/0aRmN4s...
SIG_DECODED = "Qz9+k3Yv/0aRmN4sPcE5bL8dHjU2fGiO1yT6wQ="
INVOKE = f"https://{HOST}:443/workflows/abc/triggers/manual/paths/invoke"
TRIGGER = f"{INVOKE}?api-version=2016-10-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIG}"
EXACT = response_urls(TRIGGER, "/flows/payroll", False)
FILES_SECRET = "c0de%2Bsecret%3D%3D"
FILES = response_urls(f"http://10.0.0.5:8080/api/v1?code={FILES_SECRET}", "/files/", True)

LOCATIONS = {
    # exact route (upstream: the trigger URL)
    "absolute-with-its-query": (EXACT, TRIGGER, "/flows/payroll"),
    "default-port-left-out": (EXACT, TRIGGER.replace(":443", ""), "/flows/payroll"),
    "host-in-upper-case": (EXACT, TRIGGER.replace(HOST, HOST.upper()), "/flows/payroll"),
    "scheme-relative": (EXACT, f"//{HOST}/workflows/abc/triggers/manual/paths/invoke?sig={SIG}", "/flows/payroll"),
    "path-absolute": (EXACT, "/workflows/abc/triggers/manual/paths/invoke?sv=1.0&SIG=x", "/flows/payroll"),
    "relative": (EXACT, f"invoke?sig={SIG}&page=2", "/flows/payroll?page=2"),
    "query-only": (EXACT, "?page=2&api-version=1", "/flows/payroll?page=2"),
    "empty": (EXACT, "", "/flows/payroll"),
    "other-params-and-fragment-kept": (EXACT, f"{TRIGGER}&page=2#top", "/flows/payroll?page=2#top"),
    "shadowing-spellings-dropped": (EXACT, f"{INVOKE}?sig[]=a&%73ig=b&x=1;sig=c&%20SIG=d&ok=1", "/flows/payroll?ok=1"),
    "elsewhere-on-the-upstream": (EXACT, f"https://{HOST}/workflows/abc/runs/1/operations/2?sig=OTHER", None),
    "below-an-exact-path": (EXACT, f"{INVOKE}/more", None),
    "relative-outside": (EXACT, "../../../../runs/1", None),
    "same-host-other-scheme": (EXACT, TRIGGER.replace("https:", "http:").replace(":443", ""), None),
    "same-host-other-port": (EXACT, TRIGGER.replace(":443", ":8443"), None),
    "same-host-bad-port": (EXACT, f"https://{HOST}:99999/x", None),
    "other-host": (EXACT, "https://login.example.com/authorize?x=1", "https://login.example.com/authorize?x=1"),
    "other-host-carrying-the-secret": (EXACT, f"https://login.example.com/?return={TRIGGER}", None),
    "other-host-carrying-the-secret-encoded": (EXACT, f"https://l.example.com/?r=%3Fsig%3D{SIG}", None),
    "not-http": (EXACT, "urn:example:x", "urn:example:x"),
    # prefix route (upstream: http://10.0.0.5:8080/api/v1, public /files/)
    "prefix-below": (FILES, f"http://10.0.0.5:8080/api/v1/s/7?code={FILES_SECRET}&page=2", "/files/s/7?page=2"),
    "prefix-root": (FILES, "http://10.0.0.5:8080/api/v1", "/files/"),
    "prefix-root-slash": (FILES, "/api/v1/", "/files/"),
    "prefix-not-a-segment-boundary": (FILES, "/api/v10", None),
    "prefix-dot-segments-out": (FILES, "/api/v1/../../admin", None),
    "prefix-encoded-dots-out": (FILES, "/api/v1/%2e%2e/x", None),
    "prefix-encoded-slash": (FILES, "/api/v1/a%2Fb", None),
    "prefix-double-slash-is-no-host": (FILES, "/api/v1//evil.example", "/files/evil.example"),
    "prefix-backslash": (FILES, "/api/v1/\\evil.example", None),
    "prefix-unreserved-escape-decoded": (FILES, "/api/v1/%7Euser", "/files/~user"),
}


@pytest.mark.parametrize(("rules", "location", "expected"), LOCATIONS.values(), ids=LOCATIONS.keys())
def test_location(rules: ResponseUrls, location: str, expected: str | None) -> None:
    seen = shown(rules, b"location", location.encode("latin-1"))
    assert (seen.decode("latin-1") if seen is not None else None) == expected
    content_location = shown(rules, b"content-location", location.encode("latin-1"))
    assert content_location == seen


def test_relative_references_resolve_against_the_url_the_request_went_to() -> None:
    sent_to = "http://10.0.0.5:8080/api/v1/dir/a?code=" + FILES_SECRET
    assert shown(FILES, b"location", b"b?x=1", sent_to) == b"/files/dir/b?x=1"
    assert shown(FILES, b"location", b"../c", sent_to) == b"/files/c"
    assert shown(FILES, b"location", b"../../../x", sent_to) is None


REFRESHES = {
    "url": (f"5; url={TRIGGER}", "5; url=/flows/payroll"),
    "upper-case-quoted": (f"0;URL='{TRIGGER}'", "0;URL='/flows/payroll'"),
    "comma-no-url-key": (f"3, {INVOKE}?page=1", "3, /flows/payroll?page=1"),
    "no-url": ("5", "5"),
    "other-host": ("1; url=https://example.com/", "1; url=https://example.com/"),
    "outside": (f"0; url=https://{HOST}/elsewhere", None),
}


@pytest.mark.parametrize(("refresh", "expected"), REFRESHES.values(), ids=REFRESHES.keys())
def test_refresh(refresh: str, expected: str | None) -> None:
    seen = shown(EXACT, b"refresh", refresh.encode())
    assert (seen.decode() if seen is not None else None) == expected


LINKS = {
    "one": (f'<{TRIGGER}>; rel="self"', '</flows/payroll>; rel="self"'),
    "rewritten-and-foreign": (
        f'<{INVOKE}?page=2&sig={SIG}>; rel="next", <https://docs.example.com/a,b>; rel="help"; title="x, <y>"',
        '</flows/payroll?page=2>; rel="next", <https://docs.example.com/a,b>; rel="help"; title="x, <y>"',
    ),
    "outside-value-left-out": (
        f'<https://{HOST}/runs/1>; rel="status", </workflows/abc/triggers/manual/paths/invoke>; rel="self"',
        '</flows/payroll>; rel="self"',
    ),
    "all-outside": (f"<https://{HOST}/runs/1>; rel=status", None),
    "not-a-link-list": (f"https://{HOST}/runs/1; rel=status", None),
}


@pytest.mark.parametrize(("link", "expected"), LINKS.values(), ids=LINKS.keys())
def test_link(link: str, expected: str | None) -> None:
    seen = shown(EXACT, b"link", link.encode())
    assert (seen.decode() if seen is not None else None) == expected


SECRET_SPELLINGS = {
    "as-written": SIG,
    "decoded": SIG_DECODED,
    "encoded-lower-case-hex": SIG.lower().replace("qz9", "Qz9"),
    "encoded-twice": SIG.replace("%", "%25"),
    "every-byte-encoded": "".join(f"%{byte:02X}" for byte in SIG_DECODED.encode()),
    "plus-as-space": SIG_DECODED.replace("+", " "),
    "json-escaped-slash": SIG_DECODED.replace("/", "\\/"),
    "other-case": SIG_DECODED.swapcase(),
    "inside-a-url": f"see {TRIGGER} now",
    "api-version-value": "2016-10-01",
    "sp-value-decoded": "/triggers/manual/run",
}


@pytest.mark.parametrize("value", SECRET_SPELLINGS.values(), ids=SECRET_SPELLINGS.keys())
def test_a_header_holding_a_value_of_the_upstream_query_is_dropped(value: str) -> None:
    assert shown(EXACT, b"x-debug", value.encode()) is None
    assert shown(EXACT, b"set-cookie", f"u={value}; Path=/".encode()) is None


def test_a_header_named_with_the_secret_is_dropped() -> None:
    headers = [(f"X-{SIG}".encode(), b"1"), (b"X-Other", b"2")]
    assert response_headers(headers, 200, EXACT) == [(b"X-Other", b"2")]


def test_short_query_values_and_other_headers_pass() -> None:
    for key, value in [(b"server", b"thing/1.0"), (b"etag", b'"abc"'), (b"x-debug", b"Qz9+k3Yv")]:
        assert shown(EXACT, key, value) == value


def test_response_headers_apply_the_rules_by_their_lenient_name_and_keep_the_order() -> None:
    upstream = [
        (b"Content-Type", b"text/plain"),
        (b"Location", TRIGGER.encode()),
        (b"X-Debug", f"url={TRIGGER}".encode()),
        (b"Content_Location", f"{INVOKE}?sig={SIG}".encode()),
        (b"Link", f'<{TRIGGER}>; rel="self"'.encode()),
        (b"ETag", b'"a"'),
    ]
    assert response_headers(upstream, 302, EXACT) == [
        (b"Content-Type", b"text/plain"),
        (b"Location", b"/flows/payroll"),
        (b"Content_Location", b"/flows/payroll"),
        (b"Link", b'</flows/payroll>; rel="self"'),
        (b"ETag", b'"a"'),
    ]


def test_a_route_without_a_query_only_rewrites() -> None:
    plain = response_urls("http://10.0.0.5/app", "/app/", True)
    assert plain.secrets is None
    assert shown(plain, b"location", b"http://10.0.0.5/app/x?y=1") == b"/app/x?y=1"
    assert shown(plain, b"x-anything", b"http://10.0.0.5/app/x") == b"http://10.0.0.5/app/x"
