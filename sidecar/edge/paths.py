"""Request path normalisation: one path, decided once, matched and forwarded as the same string."""

from __future__ import annotations

import re
from typing import Final

from sidecar.reasons import Reason, Rejection

__all__ = ["MAX_PATH_BYTES", "normalise"]

# Far above any real API path (IIS, in front of Logic Apps, stops at 4096 by default), far below what the HTTP parser
# takes (~64 KiB): a longer path only makes log lines and upstream requests big.
MAX_PATH_BYTES: Final = 8192

# RFC 3986 §2.3 unreserved characters: decoding them never changes what a server reads.
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
# Raw bytes refused: controls, space and DEL are never valid in a request target; `\` is a separator to some
# servers; `?` and `#` would end the path inside the URL built for the upstream (the HTTP parser has already split
# them off, so they can only come from another caller, such as forward-auth's headers).
_REFUSED_RAW: Final = re.compile(rb"[\x00-\x20\x7f\\?#]")
# Encoded `/`, `\` and NUL would let the upstream see a different path than the one we matched.
_REFUSED_OCTETS: Final = frozenset(b"/\\\x00")
_HEX: Final = b"0123456789ABCDEF"


def normalise(raw_path: bytes) -> str:
    """The path as matched and forwarded: unreserved octets decoded, other escapes upper-cased, dot segments
    removed and repeated slashes merged. Raises Rejection(INVALID_PATH) for anything that an upstream could read
    differently: encoded `/` `\\` NUL, invalid escapes or UTF-8, raw non-ASCII or control bytes, a `..` left over
    (above the root, or inside a segment such as `..;`), or more than MAX_PATH_BYTES."""
    if (
        len(raw_path) > MAX_PATH_BYTES
        or not raw_path.startswith(b"/")
        or not raw_path.isascii()  # RFC 3986 wants non-ASCII percent-encoded: refuse rather than guess
        or _REFUSED_RAW.search(raw_path) is not None
    ):
        raise Rejection(Reason.INVALID_PATH)
    if b"%" in raw_path:
        if raw_path.count(b"%") != len(_PERCENT.findall(raw_path)):
            raise Rejection(Reason.INVALID_PATH)  # a `%` not followed by two hex digits
        raw_path = _PERCENT.sub(_decode_unreserved, raw_path)
        _check_utf8(raw_path)
    path = raw_path.decode("ascii")
    if "/." in path or "//" in path:
        path = _remove_dot_segments(path)
    if ".." in path:
        # Never a dot segment any more, but Tomcat, Jetty and Spring read `..;x` as `..`, and some servers strip
        # trailing dots: a path that still holds `..` is not worth the doubt.
        raise Rejection(Reason.INVALID_PATH)
    return path


def _decode_unreserved(match: re.Match[bytes]) -> bytes:
    octet = int(match.group(1), 16)
    if octet in _UNRESERVED:
        return bytes((octet,))
    if octet in _REFUSED_OCTETS:
        raise Rejection(Reason.INVALID_PATH)
    return b"%" + bytes((_HEX[octet >> 4], _HEX[octet & 15]))


def _check_utf8(path: bytes) -> None:
    """Every percent-escaped sequence must decode to valid UTF-8 (no overlong forms, no surrogates)."""
    decoded = _PERCENT.sub(lambda m: bytes((int(m.group(1), 16),)), path)
    try:
        decoded.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise Rejection(Reason.INVALID_PATH) from exc


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 with repeated slashes merged; a `..` that climbs above the root is refused."""
    segments = path.split("/")
    trailing_slash = segments[-1] in ("", ".", "..")
    output: list[str] = []
    for segment in segments[1:]:
        if segment in ("", "."):
            continue
        if segment == "..":
            if not output:
                raise Rejection(Reason.INVALID_PATH)
            output.pop()
            continue
        output.append(segment)
    joined = "/" + "/".join(output)
    return joined + "/" if trailing_slash and output else joined
