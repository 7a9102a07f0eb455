"""CORS decisions (Fetch standard): which preflights a route's `cors` allows, and the Access-Control-* headers.

Pure: the shell (edge/cross_origin.py) answers preflights and adds these headers; the loader uses `normalise_origin`.
The answer always names the one origin asked about (never `*`), with `Vary: Origin`, so that a shared cache
never hands one origin's answer to another.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from sidecar.policy.model import Cors, Route, RouteHit, RouteLookup

__all__ = [
    "ANY_ORIGIN",
    "SAFELISTED_HEADERS",
    "PreflightRequest",
    "allows_origin",
    "normalise_origin",
    "preflight_failure",
    "preflight_headers",
    "preflight_request",
    "preflight_route",
    "request_origin",
    "response_headers",
]

ANY_ORIGIN: Final = "*"
# Request headers a page may always send (Fetch "CORS-safelisted request-header" names; browsers still list
# Content-Type in a preflight when its value is not form or text, e.g. application/json).
SAFELISTED_HEADERS: Final = frozenset({"accept", "accept-language", "content-language", "content-type"})
# What a page needs to read from the sidecar's own refusals: the challenge of a 401, the wait of a 429, the id.
_REFUSAL_EXPOSED: Final = ("www-authenticate", "retry-after", "x-request-id")
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.-]*")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_ORIGIN_SHAPE: Final = "must be an origin, scheme://host[:port], e.g. https://app.example.com"
_VARY_PREFLIGHT: Final = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"


def normalise_origin(value: str) -> str:
    """The origin as a browser serialises it in `Origin` (lower-case, no default port), or ValueError."""
    if value == ANY_ORIGIN:
        return value
    if value == "null":
        raise ValueError('"null" is refused: sandboxed pages and local files send it, so it would let any of them in')
    if "*" in value:
        raise ValueError('"*" stands alone for every origin; wildcard hosts are not supported')
    if not value.isascii() or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must be ASCII without spaces (write an international host name in its xn-- form)")
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if not _SCHEME.fullmatch(scheme) or not value.lower().startswith(scheme + "://") or not parts.hostname:
        raise ValueError(_ORIGIN_SHAPE)
    if parts.path or parts.query or parts.fragment or value.endswith(("?", "#")) or "@" in parts.netloc:
        raise ValueError(_ORIGIN_SHAPE + ": no path (not even a trailing /), query, fragment or user")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS.get(scheme) else "")


@dataclass(frozen=True, slots=True)
class PreflightRequest:
    """A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`."""

    origin: str
    method: str  # the method of the request the page wants to make
    headers: tuple[str, ...]  # lower-case names from Access-Control-Request-Headers


def preflight_request(method: str, headers: Iterable[tuple[bytes, bytes]]) -> PreflightRequest | None:
    """The preflight in a request head, or None when the request is not one (then it is an ordinary request)."""
    if method != "OPTIONS":
        return None
    origin = requested = None
    asked: list[str] = []
    for name, value in headers:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"access-control-request-method":
            requested = value.decode("latin-1").strip()
        elif name == b"access-control-request-headers":
            asked += (item.strip().lower() for item in value.decode("latin-1").split(","))
    if origin is None or not requested:
        return None
    return PreflightRequest(origin, requested, tuple(item for item in asked if item))


def preflight_route(table: RouteLookup, path: str, request: PreflightRequest) -> Route | None:
    """The route the page's actual request would take, when that route has `cors`: it owns the preflight.

    Matched by the requested method, not by OPTIONS: a route need not take OPTIONS to be called from a browser."""
    hit = table.lookup(request.method, path)
    return hit.route if isinstance(hit, RouteHit) and hit.route.cors is not None else None


def allows_origin(cors: Cors, origin: str) -> bool:
    return cors.any_origin or origin in cors.origins


def preflight_failure(cors: Cors, request: PreflightRequest) -> str | None:
    """What the preflight asks for that the route does not allow: "origin", "method", "headers"; None: nothing."""
    if not allows_origin(cors, request.origin):
        return "origin"
    if cors.methods is not None and request.method not in cors.methods:
        return "method"
    if any(name not in cors.headers for name in request.headers):
        return "headers"
    return None


def preflight_headers(cors: Cors, request: PreflightRequest) -> list[tuple[bytes, bytes]]:
    """The Access-Control-* headers of an allowed preflight's answer."""
    methods = request.method if cors.methods is None else ", ".join(sorted(cors.methods))
    headers = [
        (b"access-control-allow-origin", request.origin.encode("latin-1")),
        (b"access-control-allow-methods", methods.encode("latin-1")),
        (b"access-control-allow-headers", ", ".join(sorted(cors.headers)).encode("ascii")),
        (b"access-control-max-age", str(cors.max_age).encode("ascii")),
        (b"vary", _VARY_PREFLIGHT),
    ]
    if cors.credentials:
        headers.append((b"access-control-allow-credentials", b"true"))
    return headers


def request_origin(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"origin":
            return value.decode("latin-1")
    return None


def response_headers(cors: Cors, origin: str | None, method: str, refusal: bool = False) -> list[tuple[bytes, bytes]]:
    """Access-Control-* headers for an actual (non-preflight) answer on a route with `cors`: the upstream's, or
    the sidecar's own refusal (`refusal`), so that a page can read a 401 and its challenge."""
    headers = [(b"vary", b"Origin")]  # the answer depends on Origin even when it carries no Access-Control-*
    if origin is None or not allows_origin(cors, origin) or (cors.methods is not None and method not in cors.methods):
        return headers
    headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
    if cors.credentials:
        headers.append((b"access-control-allow-credentials", b"true"))
    exposed = (*_REFUSAL_EXPOSED, *cors.expose_headers) if refusal else cors.expose_headers
    if exposed:
        headers.append((b"access-control-expose-headers", ", ".join(exposed).encode("ascii")))
    return headers
