"""Route lookup: exact beats prefix, longer prefix beats shorter, segment boundaries, 404 and 405 with Allow."""

from __future__ import annotations

import pytest

from sidecar.policy.model import ANYONE, Match, Route
from sidecar.policy.routes import NoRoute, RouteHit, RouteTable, WrongMethod, conflicts, nestings


def make(name: str, *, path: str | None = None, prefix: str | None = None, methods: str | None = None) -> Route:
    allowed = frozenset(methods.split()) if methods is not None else None
    return Route(name, Match(path=path, path_prefix=prefix, methods=allowed), f"https://{name}.example.com/", ANYONE)


ROUTES = {
    route.name: route
    for route in (
        make("payroll", path="/flows/payroll", methods="POST"),
        make("payroll-read", path="/flows/payroll", methods="GET HEAD"),
        make("flows", prefix="/flows/", methods="GET DELETE"),
        make("public", prefix="/public/", methods="GET HEAD"),
        make("public-health", path="/public/health"),
        make("public-deep", prefix="/public/a/b", methods="GET"),
        make("docs", prefix="/docs"),
        make("exact-x", path="/x"),
        make("upper", path="/CaSe"),
    )
}


def table() -> RouteTable:
    """Built in each test, not at import: `make mutate` runs a test with the code under mutation, not its import."""
    return RouteTable.build(list(ROUTES.values()))


HITS = {
    "exact": ("POST", "/flows/payroll", "payroll", ""),
    "exact-other-method-same-path": ("GET", "/flows/payroll", "payroll-read", ""),
    "prefix-when-exact-refuses-method": ("DELETE", "/flows/payroll", "flows", "/payroll"),
    "wrong-method-union-exact-and-prefix": ("PUT", "/flows/payroll", None, ("DELETE", "GET", "HEAD", "POST")),
    "exact-beats-prefix": ("GET", "/public/health", "public-health", ""),
    "exact-without-methods-takes-any": ("DELETE", "/public/health", "public-health", ""),
    "prefix-rest": ("GET", "/public/status/a", "public", "/status/a"),
    "prefix-itself": ("GET", "/public/", "public", "/"),
    "prefix-with-slash-not-bare": ("GET", "/public", None, None),
    "longer-prefix-wins": ("GET", "/public/a/b/c", "public-deep", "/c"),
    "longer-prefix-exact": ("GET", "/public/a/b", "public-deep", ""),
    "longer-prefix-boundary": ("GET", "/public/a/bc", "public", "/a/bc"),
    "longer-prefix-falls-back-on-method": ("HEAD", "/public/a/b/c", "public", "/a/b/c"),
    "prefix-without-slash-bare": ("GET", "/docs", "docs", ""),
    "prefix-without-slash-child": ("GET", "/docs/intro", "docs", "/intro"),
    "prefix-without-slash-trailing": ("GET", "/docs/", "docs", "/"),
    "segment-boundary": ("GET", "/docsy", None, None),
    "exact-trailing-slash-differs": ("GET", "/x/", None, None),
    "exact-no-child": ("GET", "/x/y", None, None),
    "case-sensitive": ("GET", "/case", None, None),
    "case-exact": ("GET", "/CaSe", "upper", ""),
    "method-case-sensitive": ("post", "/flows/payroll", None, ("DELETE", "GET", "HEAD", "POST")),
    "no-route": ("GET", "/nothing", None, None),
    "root": ("GET", "/", None, None),
    "empty": ("GET", "", None, None),
    "wrong-method-on-prefix": ("POST", "/public/x", None, ("GET", "HEAD")),
    "wrong-method-union-of-candidates": ("POST", "/public/a/b/c", None, ("GET", "HEAD")),
    "prefix-under-exact-path": ("GET", "/flows/payroll/x", "flows", "/payroll/x"),
}


@pytest.mark.parametrize(("method", "path", "name", "expected"), HITS.values(), ids=HITS.keys())
def test_lookup(method: str, path: str, name: str | None, expected: str | tuple[str, ...] | None) -> None:
    result = table().lookup(method, path)
    if name is not None:
        assert result == RouteHit(ROUTES[name], str(expected))
    elif expected is None:
        assert result == NoRoute()
    else:
        assert result == WrongMethod(allow=tuple(expected))


def test_catch_all_prefix() -> None:
    root, exact = make("root", prefix="/"), make("a", path="/a")
    table = RouteTable.build([root, exact])
    assert table.lookup("GET", "/") == RouteHit(root, "/")
    assert table.lookup("GET", "/anything/else") == RouteHit(root, "/anything/else")
    assert table.lookup("GET", "/a") == RouteHit(exact, "")


def test_empty_table() -> None:
    assert RouteTable.build([]).lookup("GET", "/") == NoRoute()


def test_long_paths_are_cheap_and_correct() -> None:
    deep = "/public/" + "a/" * 5000
    assert table().lookup("GET", deep) == RouteHit(ROUTES["public"], deep[len("/public") :])
    assert table().lookup("GET", "/" + "x" * 10000) == NoRoute()


def test_build_refuses_conflicts() -> None:
    first, second = make("one", path="/a", methods="GET POST"), make("two", path="/a", methods="POST")
    assert conflicts([first, second]) == [(first, second)]
    with pytest.raises(ValueError, match="'one' and 'two'"):
        RouteTable.build([first, second])


@pytest.mark.parametrize("route", [make("neither"), make("both", path="/a", prefix="/a/")], ids=["neither", "both"])
def test_build_needs_one_matcher(route: Route) -> None:
    with pytest.raises(ValueError, match="exactly one of path or path_prefix"):
        RouteTable.build([route])


def test_conflicts_need_same_kind_and_key() -> None:
    routes = [make("p", path="/a"), make("q", prefix="/a"), make("r", path="/a/")]
    assert conflicts(routes) == []


def test_nestings() -> None:
    outer, inner, exact = make("o", prefix="/a"), make("i", prefix="/a/b/"), make("e", path="/a/b/c", methods="PUT")
    other = make("x", prefix="/ab")
    assert nestings([outer, inner, exact, other]) == [(inner, outer), (exact, outer), (exact, inner)]


_API = make("api", prefix="/api", methods="GET")
NESTINGS = {
    # routes in file order -> (inner, outer) pairs reported to the operator (`sidecar check`)
    "disjoint-methods-never-nest": ([_API, make("post-x", path="/api/x", methods="POST")], []),
    "an-exact-route-listed-first-still-nests": (
        [make("x", path="/api/x"), _API],
        [("x", "api")],
    ),
    "an-exact-path-equal-to-a-prefix-nests": ([make("api-exact", path="/api"), _API], [("api-exact", "api")]),
    "a-prefix-never-nests-in-itself": ([_API], []),
}


@pytest.mark.parametrize(("routes", "expected"), NESTINGS.values(), ids=NESTINGS.keys())
def test_where_a_broad_route_gives_way_is_reported(routes: list[Route], expected: list[tuple[str, str]]) -> None:
    assert [(inner.name, outer.name) for inner, outer in nestings(routes)] == expected


def test_a_table_with_clashing_routes_names_each_pair() -> None:
    routes = [make("a", path="/a"), make("b", path="/a"), make("c", prefix="/c/"), make("d", prefix="/c/")]
    with pytest.raises(ValueError, match="routes take the same requests: 'a' and 'b', 'c' and 'd'$"):
        RouteTable.build(routes)
