"""bearer(): the token from the one Authorization header, or None, or malformed_token."""

from __future__ import annotations

import pytest

from sidecar.auth.bearer import bearer
from sidecar.reasons import Reason, Rejection

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"authorization", b"Bearer " + TOKEN.encode())], TOKEN),
        ([(b"authorization", b"bearer " + TOKEN.encode())], TOKEN),
        ([(b"authorization", b"BEARER " + TOKEN.encode())], TOKEN),
        ([(b"authorization", b"Bearer   " + TOKEN.encode())], TOKEN),
        ([(b"authorization", b"Bearer abc+/~-._==")], "abc+/~-._=="),
        ([(b"host", b"x"), (b"authorization", b"Bearer t"), (b"accept", b"*/*")], "t"),
        ([], None),
        ([(b"host", b"x"), (b"x-authorization", b"Bearer t")], None),
        ([(b"authorization", b"Basic dXNlcjpwYXNz")], None),
        ([(b"authorization", b"Bearerxyz")], None),
        ([(b"authorization", b"Token abc")], None),
        ([(b"authorization", b"Bearer")], None),
        ([(b"authorization", b"Bearer ")], None),
        ([(b"authorization", b"Bearer    ")], None),
        ([(b"authorization", b"bearer \t ")], None),
    ],
    ids=[
        "bearer",
        "lower-case-scheme",
        "upper-case-scheme",
        "several-spaces",
        "b64token-charset",
        "among-other-headers",
        "missing_token-no-headers",
        "missing_token-other-headers",
        "missing_token-basic",
        "missing_token-glued-scheme",
        "missing_token-other-scheme",
        "missing_token-scheme-alone",
        "missing_token-scheme-and-space",
        "missing_token-scheme-and-spaces",
        "missing_token-scheme-and-blanks",
    ],
)
def test_bearer(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert bearer(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer a")],
        [(b"authorization", b"Basic x"), (b"authorization", b"Bearer a")],
        [(b"authorization", b"Bearer a b")],
        [(b"authorization", b"Bearer a\tb")],
        [(b"authorization", b"Bearer a,b")],
        [(b"authorization", b"Bearer a=b")],
        [(b"authorization", b"Bearer \xc3\xa9")],
        [(b"authorization", b'Bearer "a"')],
    ],
    ids=[
        "malformed_token-two-headers",
        "malformed_token-two-headers-mixed",
        "malformed_token-space-inside",
        "malformed_token-tab-inside",
        "malformed_token-comma",
        "malformed_token-padding-inside",
        "malformed_token-non-ascii",
        "malformed_token-quoted",
    ],
)
def test_malformed(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(Rejection) as caught:
        bearer(headers)
    assert caught.value.reason is Reason.MALFORMED_TOKEN
    assert str(caught.value) == "malformed_token"  # the message is the reason, never header content
