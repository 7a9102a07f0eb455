"""How each ingress asks the forward-auth endpoint about a request, and every spelling of the headers that name the
original request: shared by the in-process, integration and real-ingress suites."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sidecar.edge.forward_auth import ORIGINAL_HEADERS

__all__ = ["INGRESSES", "SPELLINGS", "Headers"]

Headers = list[tuple[str, str]]

# How each ingress asks the auth service about the original (method, uri): the auth request's method, path, headers.
INGRESSES: Final[dict[str, Callable[[str, str], tuple[str, str, Headers]]]] = {
    "ingress-nginx": lambda method, uri: (
        "GET",
        "/_auth",
        [("X-Original-URL", f"https://gw.example{uri}"), ("X-Original-Method", method)],
    ),
    "nginx": lambda method, uri: ("GET", "/_auth", [("X-Original-URI", uri), ("X-Original-Method", method)]),
    "traefik": lambda method, uri: (
        "GET",
        "/_auth",
        [
            ("X-Forwarded-Method", method),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "gw"),
            ("X-Forwarded-Uri", uri),
        ],
    ),  # fmt: skip
    "caddy": lambda method, uri: (
        "GET",
        "/_auth",
        [("X-Forwarded-Method", method), ("X-Forwarded-Uri", uri), ("X-Forwarded-Proto", "http")],
    ),
    "envoy": lambda method, uri: (method, "/_auth" + uri, []),
}

# Every spelling of an original URI or method header, with `_` for `-` too (frameworks read them alike).
_NAMES = {name.decode().title() for name in ORIGINAL_HEADERS}
SPELLINGS: Final = sorted(_NAMES | {name.replace("-", "_") for name in _NAMES})
