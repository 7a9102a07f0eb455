"""Path normalisation: the one path that is matched is the one that is forwarded."""

from __future__ import annotations

import pytest

from sidecar.edge.paths import MAX_PATH_BYTES, normalise
from sidecar.reasons import Reason, Rejection

NORMALISED = {
    "plain": (b"/flows/payroll", "/flows/payroll"),
    "root": (b"/", "/"),
    "trailing-slash-kept": (b"/x/", "/x/"),
    "dot-dot-resolved": (b"/public/../flows/payroll", "/flows/payroll"),
    "dot-removed": (b"/a/./b", "/a/b"),
    "repeated-slashes-merged": (b"//a///b", "/a/b"),
    "encoded-unreserved-decoded": (b"/%66lows/%70ayroll", "/flows/payroll"),
    "encoded-dots-resolved": (b"/public/%2e%2E/flows/payroll", "/flows/payroll"),
    "reserved-escape-uppercased": (b"/a%3ab", "/a%3Ab"),
    "utf8-escape-kept": (b"/caf%c3%a9", "/caf%C3%A9"),
    "semicolon-literal": (b"/a;b", "/a;b"),
    "case-kept": (b"/A/B", "/A/B"),
    "dot-dot-at-end-keeps-directory": (b"/a/b/..", "/a/"),
    "dot-at-end-keeps-directory": (b"/a/b/.", "/a/b/"),
    "lone-dot-is-root": (b"/.", "/"),
    "slashes-only-is-root": (b"///", "/"),
    "repeated-trailing-slashes-keep-one": (b"/a//", "/a/"),
    "dot-then-trailing-slash-keeps-directory": (b"/a/./", "/a/"),
    "mixed-case-encoded-dots-resolved": (b"/a/.%2E/b", "/b"),
    "encoded-tilde-decoded": (b"/%7euser", "/~user"),
    "double-encoding-kept-encoded": (b"/a/%252e%252e/b", "/a/%252e%252e/b"),
    "encoded-query-mark-kept": (b"/a%3fsig=x", "/a%3Fsig=x"),
    "encoded-hash-kept": (b"/a%23b", "/a%23b"),
    "encoded-control-kept-encoded": (b"/a%09b", "/a%09b"),
    "single-dots-in-a-name-kept": (b"/v1.2/file.txt", "/v1.2/file.txt"),
    "longest-allowed": (b"/" + b"a" * (MAX_PATH_BYTES - 1), "/" + "a" * (MAX_PATH_BYTES - 1)),
}


@pytest.mark.parametrize(("raw", "expected"), NORMALISED.values(), ids=NORMALISED.keys())
def test_normalise(raw: bytes, expected: str) -> None:
    assert normalise(raw) == expected


REFUSED = {
    "encoded-slash": b"/public%2fflows",
    "encoded-slash-lower": b"/a%2Fb",
    "encoded-backslash": b"/a%5cb",
    "raw-backslash": b"/a\\b",
    "encoded-nul": b"/a%00",
    "raw-nul": b"/a\x00",
    "climbs-above-root": b"/../etc/passwd",
    "encoded-climb": b"/%2e%2e/x",
    "overlong-utf8": b"/%c0%af",
    "invalid-utf8": b"/%ff",
    "broken-escape": b"/%zz",
    "truncated-escape": b"/a%2",
    "raw-non-ascii": "/café".encode(),
    "relative": b"flows",
    "asterisk-form": b"*",
    "absolute-form": b"http://host/x",
    "empty": b"",
    "climbs-after-descending": b"/a/../../x",
    "dot-dot-semicolon": b"/public/..;/admin",
    "encoded-dot-dot-semicolon": b"/public/%2e%2e;/admin",
    "dot-dot-inside-a-segment": b"/a..b",
    "three-dots": b"/a/.../b",
    "raw-tab": b"/a\tb",
    "raw-space": b"/a b",
    "raw-newline": b"/a\r\nX-Auth-User: x",
    "raw-del": b"/a\x7f",
    "raw-query-mark": b"/public/x?sig=forged",
    "raw-hash": b"/public/x#/../admin",
    "surrogate-utf8": b"/%ed%a0%80",
    "overlong-dot": b"/%c0%ae%c0%ae/x",
    "truncated-utf8": b"/%c3",
    "too-long": b"/" + b"a" * MAX_PATH_BYTES,
}


@pytest.mark.parametrize("raw", REFUSED.values(), ids=REFUSED.keys())
def test_refused(raw: bytes) -> None:
    with pytest.raises(Rejection) as caught:
        normalise(raw)
    assert caught.value.reason is Reason.INVALID_PATH
