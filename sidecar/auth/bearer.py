"""The bearer token of a request: read from the one `Authorization` header (RFC 6750 §2.1), nowhere else.

Pure: no I/O. Tokens in query strings or form bodies (RFC 6750 §2.2, §2.3) are not read, on purpose: they end up
in access logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from sidecar.reasons import Reason, Rejection

__all__ = ["bearer"]

_AUTHORIZATION: Final = b"authorization"
_BEARER: Final = b"bearer"
# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token
#                b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN: Final = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")


def bearer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The bearer token, or None when there is none (=> missing_token): no `Authorization` header, another scheme,
    or the `Bearer` scheme with nothing after it (`Bearer`, `Bearer   `: a request without credentials, which
    RFC 6750 §3.1 answers with no error code).

    Raises Rejection(MALFORMED_TOKEN) for two `Authorization` headers (which one would the upstream believe?) and
    for a Bearer credential that is not a b64token. `headers` are ASGI raw headers: lower-case names.
    """
    value: bytes | None = None
    for name, raw in headers:
        if name == _AUTHORIZATION:
            if value is not None:
                raise Rejection(Reason.MALFORMED_TOKEN)
            value = raw
    if value is None:
        return None
    scheme, _, credentials = value.strip(b" \t").partition(b" ")
    if scheme.lower() != _BEARER:
        return None  # another scheme (Basic, ...) carries no bearer token
    token = credentials.lstrip(b" ")
    if not token:
        return None
    if _B64TOKEN.fullmatch(token) is None:
        raise Rejection(Reason.MALFORMED_TOKEN)
    return token.decode("ascii")
