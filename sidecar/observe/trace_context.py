"""The W3C Trace Context trace id an access line carries: read from a valid `traceparent` only, never anything else.

The sidecar takes no part in the trace (it starts no span): `traceparent` and `tracestate` go to the upstream
unchanged, valid or not, as W3C Trace Context lets a proxy that does not participate (sidecar/upstream/target.py
passes them like any end-to-end header). Only the log reads them: the trace id of a `traceparent` that parses as
the recommendation's §3.2 says, so that an operator can find the call in the tracing system. A value that does not
parse, or two `traceparent` lines (which one the next hop reads is unknown; W3C's test suite treats them as
invalid), give no trace id: a client's bytes never reach the log through this field, only 32 lowercase hex digits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

__all__ = ["trace_id"]

# version "-" trace-id "-" parent-id "-" trace-flags, each lowercase hex (§3.2.2: uppercase is invalid).
_TRACEPARENT: Final = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_VERSION_00_LENGTH: Final = 55
_INVALID_VERSION: Final = b"ff"
_ZERO_TRACE: Final = b"0" * 32
_ZERO_PARENT: Final = b"0" * 16


def trace_id(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The trace id of the request's one valid `traceparent` (names lower-cased, as the listener gives them), or
    None. Version 00 is exactly 55 characters; a later version may add fields after a `-` (§3.2.4: parse what this
    version knows); version ff, an all-zero trace id or parent id are invalid."""
    found: bytes | None = None
    for name, value in headers:
        if name == b"traceparent":
            if found is not None:
                return None  # two copies: which one the next hop reads is unknown
            found = value
    if found is None:
        return None
    match = _TRACEPARENT.match(found)
    if match is None:
        return None
    version, trace, parent = match.group(1, 2, 3)
    if version == _INVALID_VERSION or trace == _ZERO_TRACE or parent == _ZERO_PARENT:
        return None
    longer = len(found) != _VERSION_00_LENGTH
    if longer and (version == b"00" or found[_VERSION_00_LENGTH : _VERSION_00_LENGTH + 1] != b"-"):
        return None
    return trace.decode("ascii")
