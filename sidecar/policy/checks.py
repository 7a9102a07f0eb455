"""Checks across the whole policy, once each part is valid: names, ambiguous routes, nesting, unused providers.

Errors and warnings land on the `Document`, located at the route or key they are about.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sidecar.policy.model import AllowRule, IdentityHeaders, Match, Provider, Route
from sidecar.policy.routes import claiming, conflicts, nestings
from sidecar.policy.yamlmarks import Document, Path

__all__ = ["check_headers", "check_route_providers", "check_routes", "check_unused_providers"]

# Headers the proxy itself owns or that change how a message is framed or authenticated.
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "keep-alive",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-request-id",
    }
)


def check_routes(doc: Document, routes: Mapping[int, Route]) -> None:
    """`routes` maps each valid route's index in the file to the route."""
    index_of = {id(route): index for index, route in routes.items()}
    seen: dict[str, Route] = {}
    for index, route in routes.items():
        first = seen.setdefault(route.name, route)
        if first is not route:
            doc.error(("routes", index, "name"), f'duplicate route name "{route.name}" (first at line {first.line})')
    ordered = list(routes.values())
    for earlier, later in conflicts(ordered):
        doc.error(
            _match_path(index_of[id(later)], later.match),
            f'route "{later.name}" and route "{earlier.name}" (line {earlier.line}) both match '
            f"{_describe(later.match)} for {_shared(earlier.match, later.match)}; one request must have one route",
        )
    claims = claiming(ordered)
    for inner, outer in nestings(ordered):
        # Where the rules differ, say that the exact route also takes the path's other spellings (routes.py).
        spelled = inner.match.path in claims and (inner.allow != outer.allow or inner.mode != outer.mode)
        doc.warn(
            _match_path(index_of[id(inner)], inner.match),
            f'{_describe(inner.match)} is inside path_prefix {outer.match.path_prefix} of route "{outer.name}" '
            f'(line {outer.line}); route "{inner.name}" takes the requests it matches'
            + (f" and its other spellings ({inner.match.path}/, {inner.match.path}.json, ...)" if spelled else ""),
        )


def check_route_providers(
    doc: Document, path: Path, rules: Sequence[AllowRule], providers: Mapping[str, Provider]
) -> bool:
    """An opaque token names no issuer, so a route can ask only one introspection endpoint about it: with two, the
    answer would depend on which was asked first. False (and an error) when a route's rules name more than one."""
    names = sorted({rule.provider for rule in rules if (p := providers.get(rule.provider)) and p.introspection})
    if len(names) > 1:
        doc.error((*path, "allow"), f"introspection providers {', '.join(names)} on one route: use one per route")
        return False
    return True


def check_unused_providers(doc: Document, providers: Sequence[str], routes: Sequence[Route]) -> None:
    used = {provider for route in routes for provider in route.providers}
    for name in providers:
        if name not in used:
            doc.warn(("providers", name), f'provider "{name}" is not used by any route')


def check_headers(doc: Document, headers: IdentityHeaders) -> None:
    """Two identity fields in one header would let one overwrite the other; a reserved name would break the call."""
    seen: dict[str, str] = {}
    for key in ("subject", "user", "tenant", "roles", "provider"):
        name: str = getattr(headers, key)
        first = seen.setdefault(name.lower(), key)
        if name.lower() in _RESERVED_HEADERS:
            doc.error(("identity_headers", key), f'header "{name}" is reserved; choose another name')
        elif first != key:
            doc.error(("identity_headers", key), f'header "{name}" is already used for identity_headers.{first}')


def _match_path(index: int, match: Match) -> Path:
    return ("routes", index, "match", "path" if match.path is not None else "path_prefix")


def _describe(match: Match) -> str:
    return f"path {match.path}" if match.path is not None else f"path_prefix {match.path_prefix}"


def _shared(a: Match, b: Match) -> str:
    if a.methods is None and b.methods is None:
        return "every method"
    if a.methods is None or b.methods is None:
        return ", ".join(sorted(a.methods or b.methods or ()))
    return ", ".join(sorted(a.methods & b.methods))
