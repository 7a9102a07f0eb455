"""The bearer token is read exactly as RFC 6750 §2.1 spells it: only space and tab around the header value, spaces
between `Bearer` and the token, and the token's own characters kept, whatever they are (pure: sidecar.auth.bearer)."""

from __future__ import annotations

import pytest

from sidecar.auth.bearer import bearer
from sidecar.reasons import Reason, Rejection

SPELLINGS: dict[str, tuple[bytes, str | Reason | None]] = {
    # Authorization value -> the token, no bearer token (None), or the refusal
    "tab-and-spaces-around-the-value": (b"\t Bearer abc \t", "abc"),
    "a-form-feed-after-the-token-is-not-whitespace": (b"Bearer abc\x0c", Reason.MALFORMED_TOKEN),
    "a-form-feed-before-the-scheme-is-not-bearer": (b"\x0cBearer abc", None),
    "a-vertical-tab-before-the-token-is-not-a-space": (b"Bearer  \x0babc", Reason.MALFORMED_TOKEN),
    "token-letters-at-its-end-are-kept": (b"Bearer abcXX", "abcXX"),
    "token-letters-at-its-start-are-kept": (b"Bearer XXabc", "XXabc"),
    "letters-before-the-scheme-make-another-scheme": (b"XBearer abc", None),
}


@pytest.mark.parametrize(("value", "expected"), SPELLINGS.values(), ids=SPELLINGS.keys())
def test_the_token_is_read_exactly(value: bytes, expected: str | Reason | None) -> None:
    headers = [(b"authorization", value)]
    if isinstance(expected, Reason):
        with pytest.raises(Rejection) as refused:
            bearer(headers)
        assert refused.value.reason is expected
    else:
        assert bearer(headers) == expected
