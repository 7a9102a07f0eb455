"""RFC 9457 problem+json responses for refusals, with the RFC 6750 bearer challenge where one is due."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Final

from sidecar.reasons import Reason, outcome

__all__ = ["problem_body", "problem_headers", "challenge"]

PROBLEM_TYPE_BASE = "urn:auth-sidecar:problem:"


def challenge(reason: Reason, realm: str) -> str | None:
    """The WWW-Authenticate value for a refusal, or None. The realm is configured, never from the request
    (Envoy's realm echoes the URL, query token included); the description is fixed text from the table."""
    result = outcome(reason)
    if not result.challenge:
        return None
    if result.bearer_error is None:
        return f'Bearer realm="{realm}"'
    return f'Bearer realm="{realm}", error="{result.bearer_error}", error_description="{result.description}"'


def problem_body(reason: Reason, request_id: str, route: str | None, status: int | None = None) -> bytes:
    """The body says what was refused and why in fixed words; it never holds the token or any claim."""
    before, after = _body_around_request_id(reason, route, status)
    return before + json.dumps(request_id).encode("ascii") + after


_REQUEST_ID_SLOT: Final = "request-id-slot"


@functools.lru_cache(maxsize=1024)
def _body_around_request_id(reason: Reason, route: str | None, status: int | None) -> tuple[bytes, bytes]:
    """The body's JSON up to and after the request id's value: all of it is fixed per reason, route and status
    (encoding it whole per refusal was ~3 µs of a ~47 µs refusal)."""
    result = outcome(reason)
    body: dict[str, object] = {
        "type": PROBLEM_TYPE_BASE + reason.value,
        "title": HTTPStatus(status).phrase if status else result.title,
        "status": status or result.status,
        "detail": result.description,
        "reason": reason.value,
        "request_id": _REQUEST_ID_SLOT,
    }
    if route is not None:
        body["route"] = route
    before, _, after = json.dumps(body, separators=(",", ":")).partition(f'"request_id":"{_REQUEST_ID_SLOT}"')
    return (before + '"request_id":').encode("utf-8"), after.encode("utf-8")


def problem_headers(
    reason: Reason, realm: str, request_id: str, body: bytes, allow: Sequence[str] = ()
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"no-store"),
        (b"x-request-id", request_id.encode("ascii")),
    ]
    value = challenge(reason, realm)
    if value is not None:
        headers.append((b"www-authenticate", value.encode("ascii")))
    if allow:
        headers.append((b"allow", ", ".join(allow).encode("ascii")))
    return headers
