"""Compiled route table: lookup(method, path) -> RouteHit | NoRoute | WrongMethod.

Precedence is fixed, never configurable: an exact `path` beats any `path_prefix`, a longer prefix beats a shorter
one. Two routes that could take the same request at the same precedence are refused (`conflicts`), so the order of
routes in the file never decides anything. Prefixes match on segment boundaries: `/public` takes `/public` and
`/public/x`, never `/publicity`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sidecar.policy.model import Match, Route

__all__ = ["NoRoute", "RouteHit", "RouteTable", "WrongMethod", "conflicts", "methods_overlap", "nestings"]


@dataclass(frozen=True, slots=True)
class RouteHit:
    """The route that takes the request; `rest` is what a prefix route appends to its upstream path."""

    route: Route
    rest: str  # "" for an exact path; for a prefix route the remainder, starting with "/" (or "")


@dataclass(frozen=True, slots=True)
class NoRoute:
    """No route matches the path (404)."""


@dataclass(frozen=True, slots=True)
class WrongMethod:
    """Routes match the path but none takes the method (405); `allow` is for the `Allow` header."""

    allow: tuple[str, ...]


_NO_ROUTE = NoRoute()


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

    __slots__ = ("_exact", "_prefixes", "_prefix_lengths")

    def __init__(self, exact: dict[str, _Slot], prefixes: dict[str, _Slot]) -> None:
        self._exact = exact
        self._prefixes = prefixes
        # Probing only the lengths that exist keeps lookup cost independent of how long the request path is.
        self._prefix_lengths = tuple(sorted({len(prefix) for prefix in prefixes}, reverse=True))

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
        return cls(exact, prefixes)

    def lookup(self, method: str, path: str) -> RouteHit | NoRoute | WrongMethod:
        allowed: set[str] = set()
        slot = self._exact.get(path)
        if slot is not None:
            route = slot.pick(method)
            if route is not None:
                return RouteHit(route, "")
            allowed.update(slot.methods)
        size = len(path)
        for length in self._prefix_lengths:  # longest first
            if length > size or not (length == size or path[length - 1] == "/" or path[length] == "/"):
                continue  # not a segment boundary of this path: `/public` must not take `/publicity`
            slot = self._prefixes.get(path[:length])
            if slot is None:
                continue
            route = slot.pick(method)
            if route is not None:
                return RouteHit(route, path[slot.strip :])
            allowed.update(slot.methods)
        return WrongMethod(tuple(sorted(allowed))) if allowed else _NO_ROUTE


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
