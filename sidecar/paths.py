"""Request path normalisation: one path, decided once, matched and forwarded as the same string."""

from __future__ import annotations

import re
from typing import Final

from sidecar.decision import Reason, Rejection

__all__ = ["normalise"]

# RFC 3986 §2.3 unreserved characters: decoding them never changes what a server reads.
_UNRESERVED: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT: Final = re.compile(rb"%([0-9A-Fa-f]{2})")
# Encoded `/`, `\` and NUL would let the upstream see a different path than the one we matched.
_REFUSED_OCTETS: Final = frozenset(b"/\\\x00")
_HEX: Final = b"0123456789ABCDEF"


def normalise(raw_path: bytes) -> str:
    """The path as matched and forwarded: unreserved octets decoded, other escapes upper-cased,
    dot segments removed and repeated slashes merged. Raises Rejection(INVALID_PATH) for anything
    that an upstream could read differently."""
    # Raw non-ASCII is not a valid URI path (RFC 3986 wants it percent-encoded): refuse rather than guess.
    if not raw_path.startswith(b"/") or not raw_path.isascii() or b"\\" in raw_path or b"\x00" in raw_path:
        raise Rejection(Reason.INVALID_PATH)
    if b"%" in raw_path:
        if raw_path.count(b"%") != len(_PERCENT.findall(raw_path)):
            raise Rejection(Reason.INVALID_PATH)  # a `%` not followed by two hex digits
        raw_path = _PERCENT.sub(_decode_unreserved, raw_path)
        _check_utf8(raw_path)
    path = raw_path.decode("ascii")
    if "/." not in path and "//" not in path:
        return path
    return _remove_dot_segments(path)


def _decode_unreserved(match: re.Match[bytes]) -> bytes:
    octet = int(match.group(1), 16)
    if octet in _UNRESERVED:
        return bytes((octet,))
    if octet in _REFUSED_OCTETS:
        raise Rejection(Reason.INVALID_PATH)
    return b"%" + bytes((_HEX[octet >> 4], _HEX[octet & 15]))


def _check_utf8(path: bytes) -> None:
    """Every percent-escaped sequence must decode to valid UTF-8 (no overlong forms)."""
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
