"""The request head read once for framing and provenance: ambiguous framing or a doubled credential is a conflict
(400), and the declared body size and the received X-Forwarded-For are kept for the gate.

Pure: one pass over the ASGI headers (names already lower-case), no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = ["Head", "read_head"]

_HOST: Final = 1
_AUTHORIZATION: Final = 2
_CONTENT_LENGTH: Final = 4
_TRANSFER_ENCODING: Final = 8
_FORWARDED_FOR: Final = 16
# Headers that must appear at most once: two of them leave the upstream (or a cache) to pick one, and a pick that
# differs from ours is how smuggling and credential confusion work.
_WATCHED: Final = {
    b"host": _HOST,
    b"authorization": _AUTHORIZATION,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"x-forwarded-for": _FORWARDED_FOR,
}


@dataclass(slots=True)
class Head:
    content_length: int | None = None
    chunked: bool = False
    forwarded_for: bytes | None = None  # every X-Forwarded-For value, in order, joined with ", "
    conflict: bool = False  # refused with 400 conflicting_headers

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


def read_head(headers: Iterable[tuple[bytes, bytes]]) -> Head:
    """Conflicts: a second Host, Authorization, Content-Length or Transfer-Encoding; Content-Length with
    Transfer-Encoding (RFC 9112 §6.1: a proxy must not forward both); a Content-Length that is not a number; a
    Transfer-Encoding other than `chunked` (a coding the upstream would have to undo, on bytes we cannot check)."""
    head = Head()
    seen = 0
    for name, value in headers:
        kind = _WATCHED.get(name)
        if kind is None:
            continue
        if kind == _FORWARDED_FOR:  # a list header: several lines are one list (RFC 9110 §5.3)
            head.forwarded_for = value if head.forwarded_for is None else head.forwarded_for + b", " + value
            continue
        if seen & kind:
            head.conflict = True
        seen |= kind
        if kind == _CONTENT_LENGTH:
            length = value.strip()
            if length.isdigit():
                head.content_length = int(length)
            else:
                head.conflict = True
        elif kind == _TRANSFER_ENCODING:
            head.chunked = True
            if value.strip().lower() != b"chunked":
                head.conflict = True
    if seen & _CONTENT_LENGTH and seen & _TRANSFER_ENCODING:
        head.conflict = True
    return head
