"""A route's `rate_limit` and `cors`, built from the spec and checked against the route they belong to.

Shapes and single values are checked in schema; here what needs the route too: a per-caller budget needs a verified
caller, CORS methods must be methods the route takes.
"""

from __future__ import annotations

from sidecar.policy.cors import ANY_ORIGIN, SAFELISTED_HEADERS
from sidecar.policy.model import DEFAULT_IPV6_PREFIX, Cors, RateKey, RateLimit
from sidecar.policy.schema import CorsSpec, RateLimitSpec, RouteSpec
from sidecar.policy.yamlmarks import Document, Path

__all__ = ["build_cors", "build_rate_limit"]


def build_rate_limit(doc: Document, path: Path, route: RouteSpec) -> RateLimit | None:
    """The route's rate limit (None: none). Errors land on `doc`."""
    spec: RateLimitSpec | None = route.rate_limit
    if spec is None:
        return None
    per = RateKey(spec.per)
    if per is not RateKey.IP and route.allow == "anyone":
        doc.error(
            (*path, "rate_limit", "per"),
            f"per: {per.value} needs a verified caller, and this route allows anyone (use per: ip)",
        )
    if spec.ipv6_prefix is not None and per is not RateKey.IP:
        doc.error((*path, "rate_limit", "ipv6_prefix"), "applies to per: ip only (it groups client addresses)")
        return RateLimit(per, spec.requests, int(spec.window))
    return RateLimit(per, spec.requests, int(spec.window), spec.ipv6_prefix or DEFAULT_IPV6_PREFIX)


def build_cors(doc: Document, path: Path, route: RouteSpec) -> Cors | None:
    """The route's CORS settings (None: the route does not answer preflights). Errors land on `doc`."""
    spec: CorsSpec | None = route.cors
    if spec is None:
        return None
    taken = route.match.methods
    methods = frozenset(spec.methods) if spec.methods is not None else (frozenset(taken) if taken else None)
    if spec.methods is not None and taken is not None:
        for index, method in enumerate(spec.methods):
            if method not in taken:
                doc.error(
                    (*path, "cors", "methods", index),
                    f"{method} is not a method of this route (it takes: {', '.join(sorted(set(taken)))})",
                )
    if taken is not None and "OPTIONS" in taken:
        doc.warn(
            (*path, "match", "methods"),
            "OPTIONS preflights (with Origin and Access-Control-Request-Method) are answered by the sidecar "
            "because of cors: they never reach the upstream",
        )
    headers = SAFELISTED_HEADERS | {name.lower() for name in spec.headers}
    if route.allow != "anyone" and "authorization" not in headers:
        doc.warn(
            (*path, "cors", "headers"), "without Authorization, pages cannot send the bearer token this route needs"
        )
    any_origin = ANY_ORIGIN in spec.origins
    return Cors(
        origins=frozenset() if any_origin else frozenset(spec.origins),
        any_origin=any_origin,
        methods=methods,
        headers=headers,
        expose_headers=tuple(dict.fromkeys(name.lower() for name in spec.expose_headers)),
        max_age=int(spec.max_age),
        credentials=spec.credentials,
    )
