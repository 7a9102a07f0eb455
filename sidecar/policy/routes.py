"""Compiled route table: lookup(method, path) -> RouteHit | NoRoute | WrongMethod.

Precedence is fixed, never configurable: an exact `path` beats any `path_prefix`, a longer prefix beats a shorter
one. Two routes that could take the same request at the same precedence are refused (`conflicts`), so the order of
routes in the file never decides anything. Prefixes match on segment boundaries: `/public` takes `/public` and
`/public/x`, never `/publicity`.

An exact path that lies under a prefix route with other rules (`allow` or `mode`) also claims the spellings that
web frameworks and servers read as that same path, so that they are never decided by the more open prefix: the
path plus `/`, and the path plus a last-segment suffix starting with `.`, `:`, `;` or `%20` (`admin.`, `admin.json`,
`admin::$DATA`, `admin;x`, `admin%20`), optionally followed by `/`. Such a request is decided, and forwarded, as the
exact path itself would be. A route of its own for the spelling (an exact path, or a longer prefix) still wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from sidecar.policy.model import Match, NoRoute, Route, RouteHit, WrongMethod

__all__ = [
    "NoRoute",
    "RouteHit",
    "RouteTable",
    "WrongMethod",
    "claiming",
    "conflicts",
    "methods_overlap",
    "nestings",
]


_NO_ROUTE = NoRoute()
# What starts a suffix that Express, ASP.NET Core, Spring (suffix patterns, matrix parameters), Tomcat and IIS/NTFS
# (trailing dots and spaces, alternate data streams) drop or ignore when they route a path.
_SUFFIX_STARTS: Final = (".", ":", ";", "%20")


@dataclass(frozen=True, slots=True)
class _Slot:
    """The routes sharing one path or one prefix. Their method sets are disjoint: `build` refuses overlaps."""

    by_method: dict[str, Route]
    every: Route | None  # the route without `methods`, if any (then it is the only one in the slot)
    methods: frozenset[str]
    strip: int  # for a prefix: rest = path[strip:], the prefix without its trailing "/"

    def pick(self, method: str) -> Route | None:
        return self.every or self.by_method.get(method)


class RouteTable:
    """Exact paths in one dict; prefixes in another, probed only at the path's own segment boundaries."""

    __slots__ = ("_exact", "_prefixes", "_prefix_lengths", "_claims")

    def __init__(
        self, exact: dict[str, _Slot], prefixes: dict[str, _Slot], claims: frozenset[str] = frozenset()
    ) -> None:
        self._exact = exact
        self._prefixes = prefixes
        # Probing only the lengths that exist keeps lookup cost independent of how long the request path is.
        self._prefix_lengths = tuple(sorted({len(prefix) for prefix in prefixes}, reverse=True))
        self._claims = claims  # exact paths that also take their other spellings (see the module docstring)

    @classmethod
    def build(cls, routes: Sequence[Route]) -> RouteTable:
        """Compile `routes`. The loader has already reported these problems with lines; this guards other callers."""
        for route in routes:
            if (route.match.path is None) == (route.match.path_prefix is None):
                raise ValueError(f"route {route.name!r} needs exactly one of path or path_prefix")
        clashes = conflicts(routes)
        if clashes:
            names = ", ".join(f"{a.name!r} and {b.name!r}" for a, b in clashes)
            raise ValueError(f"routes take the same requests: {names}")
        exact = _slots(route for route in routes if route.match.path is not None)
        prefixes = _slots(route for route in routes if route.match.path_prefix is not None)
        return cls(exact, prefixes, claiming(routes))

    def lookup(self, method: str, path: str) -> RouteHit | NoRoute | WrongMethod:
        allowed: set[str] = set()
        slot = self._exact.get(path)
        if slot is not None:
            route = slot.pick(method)
            if route is not None:
                return RouteHit(route, "")
            allowed.update(slot.methods)
        elif self._claims:
            stem = self._claimed_by(path)
            if stem is not None:
                claimed = self._exact[stem]
                route = claimed.pick(method)
                if route is None:  # as for the exact path itself: its methods are named in a 405's Allow
                    allowed.update(claimed.methods)
                hit = self._prefix_lookup(method, path, allowed)
                # The spelling goes where the exact path itself goes, unless a prefix that does not cover the exact
                # path (a route the operator wrote for these spellings) takes it.
                if route is not None and (not isinstance(hit, _PrefixHit) or _prefix_takes(hit.prefix, stem)):
                    return RouteHit(route, "")
                return hit.found if isinstance(hit, _PrefixHit) else hit
        found = self._prefix_lookup(method, path, allowed)
        return found.found if isinstance(found, _PrefixHit) else found

    def _claimed_by(self, path: str) -> str | None:
        """The claiming exact path that `path` is another spelling of, the longest if several; else None."""
        body = path[:-1] if path.endswith("/") else path
        if body in self._claims:
            return body if body != path else None
        segment = body.rfind("/") + 1
        for index in range(len(body) - 1, segment, -1):
            if body.startswith(_SUFFIX_STARTS, index) and body[:index] in self._claims:
                return body[:index]
        return None

    def _prefix_lookup(self, method: str, path: str, allowed: set[str]) -> _PrefixHit | NoRoute | WrongMethod:
        size = len(path)
        for length in self._prefix_lengths:  # longest first
            if length > size or not (length == size or path[length - 1] == "/" or path[length] == "/"):
                continue  # not a segment boundary of this path: `/public` must not take `/publicity`
            slot = self._prefixes.get(path[:length])
            if slot is None:
                continue
            route = slot.pick(method)
            if route is not None:
                return _PrefixHit(RouteHit(route, path[slot.strip :]), path[:length])
            allowed.update(slot.methods)
        return WrongMethod(tuple(sorted(allowed))) if allowed else _NO_ROUTE


@dataclass(frozen=True, slots=True)
class _PrefixHit:
    found: RouteHit
    prefix: str  # the matched prefix, as written in the policy


def _key(match: Match) -> str:
    return match.path if match.path is not None else match.path_prefix or ""


def _slots(routes: Iterable[Route]) -> dict[str, _Slot]:
    grouped: dict[str, list[Route]] = {}
    for route in routes:
        grouped.setdefault(_key(route.match), []).append(route)
    slots = {}
    for key, members in grouped.items():
        every = next((route for route in members if route.match.methods is None), None)
        by_method = {method: route for route in members for method in route.match.methods or ()}
        slots[key] = _Slot(by_method, every, frozenset(by_method), len(key.rstrip("/")))
    return slots


def methods_overlap(a: Match, b: Match) -> bool:
    """Whether some method is taken by both (a route without `methods` takes every method)."""
    return a.methods is None or b.methods is None or not a.methods.isdisjoint(b.methods)


def _prefix_takes(prefix: str, path: str) -> bool:
    return path.startswith(prefix) and (prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/")


def conflicts(routes: Sequence[Route]) -> list[tuple[Route, Route]]:
    """Pairs (earlier, later) with the same path, or the same prefix, and a method in common: ambiguous."""
    found = []
    for index, later in enumerate(routes):
        for earlier in routes[:index]:
            same_kind = (earlier.match.path is None) == (later.match.path is None)
            if same_kind and _key(earlier.match) == _key(later.match) and methods_overlap(earlier.match, later.match):
                found.append((earlier, later))
    return found


def claiming(routes: Sequence[Route]) -> frozenset[str]:
    """The exact paths that lie under a prefix route deciding otherwise (another `allow` or `mode`): each also
    takes its other spellings, so that the more open prefix never decides them."""
    return frozenset(
        inner.match.path
        for inner, outer in nestings(routes)
        if inner.match.path is not None and (inner.allow != outer.allow or inner.mode != outer.mode)
    )


def nestings(routes: Sequence[Route]) -> list[tuple[Route, Route]]:
    """Pairs (inner, outer): the outer prefix also matches the inner route's paths, and the inner one wins there.

    Deterministic, so allowed; reported so that an operator sees where a broad route gives way to a narrow one."""
    found = []
    for inner in routes:
        for outer in routes:
            prefix = outer.match.path_prefix
            if prefix is None or outer is inner or not methods_overlap(inner.match, outer.match):
                continue
            key = _key(inner.match)
            if (inner.match.path is not None or key != prefix) and _prefix_takes(prefix, key):
                found.append((inner, outer))
    return found
