"""Route lookup for the other spellings of a protected exact path under an open prefix: `/public/admin/`,
`/public/admin.`, `/public/admin.json`, `/public/admin%20`, `/public/admin::$DATA`, `/public/admin;x` are read by
Express, ASP.NET Core, Spring, Tomcat or IIS as `/public/admin`, so they are decided by the exact route, never by
the open prefix around it. Paths here are as the gate looks them up: normalised (`/public/admin/.` and
`/public/admin%2e` arrive as `/public/admin/` and `/public/admin.`)."""

from __future__ import annotations

import pytest

from sidecar.edge.paths import normalise
from sidecar.policy.load import parse_policy
from sidecar.policy.model import ANYONE, AllowRule, Anyone, Match, Route
from sidecar.policy.routes import NoRoute, RouteHit, RouteTable, WrongMethod, claiming

ADMINS = (AllowRule("contoso"),)


def make(
    name: str,
    *,
    path: str | None = None,
    prefix: str | None = None,
    methods: str | None = None,
    allow: Anyone | tuple[AllowRule, ...] = ANYONE,
) -> Route:
    allowed = frozenset(methods.split()) if methods is not None else None
    return Route(name, Match(path=path, path_prefix=prefix, methods=allowed), f"https://{name}.example.com/", allow)


ROUTES = {
    route.name: route
    for route in (
        make("public", prefix="/public/"),
        make("admin", path="/public/admin", methods="GET POST", allow=ADMINS),
        make("admin-json", path="/public/admin.json.bak", allow=ADMINS),  # an exact route of its own: it wins
        make("admin-files", prefix="/public/admin./", allow=ADMINS),  # a longer prefix written for a spelling
        make("health", path="/public/health"),  # as open as its prefix: claims nothing
        make("one-letter", path="/public/a", allow=ADMINS),
        make("directory", path="/public/dir/", allow=ADMINS),
    )
}


def table() -> RouteTable:
    """Built in each test: `make mutate` runs a mutant's tests in a process that imported this module unmutated."""
    return RouteTable.build(list(ROUTES.values()))


# raw request path -> the route that decides it, and the rest a prefix route appends
SPELLINGS = {
    "itself": ("/public/admin", "admin", ""),
    "trailing-slash": ("/public/admin/", "admin", ""),
    "dot-segment": ("/public/admin/.", "admin", ""),
    "trailing-dot": ("/public/admin.", "admin", ""),
    "encoded-dot": ("/public/admin%2e", "admin", ""),
    "dot-and-space": ("/public/admin.%20", "admin", ""),
    "trailing-space": ("/public/admin%20", "admin", ""),
    "data-stream": ("/public/admin::$DATA", "admin", ""),
    "extension": ("/public/admin.json", "admin", ""),
    "matrix-parameter": ("/public/admin;x", "admin", ""),
    "dot-then-slash": ("/public/admin./", "admin-files", "/"),  # the operator's longer prefix
    "exact-route-for-spelling": ("/public/admin.json.bak", "admin-json", ""),
    "extension-of-spelling-route": ("/public/admin.json.bak.1", "admin-json", ""),  # claims its own spellings
    "child-stays-with-prefix": ("/public/admin/x", "public", "/admin/x"),
    "longer-name-stays-with-prefix": ("/public/administrator", "public", "/administrator"),
    "other-name-with-dot": ("/public/adm.in", "public", "/adm.in"),
    "unclaimed-exact-path": ("/public/health/", "public", "/health/"),
    "unclaimed-extension": ("/public/health.json", "public", "/health.json"),
    "one-letter-name-extension": ("/public/a.json", "one-letter", ""),
    "spelling-in-an-earlier-segment-stays-with-prefix": ("/public/admin.json/x", "public", "/admin.json/x"),
    "a-name-in-a-protected-directory-stays-with-prefix": ("/public/dir/.json", "public", "/dir/.json"),
}


@pytest.mark.parametrize(("raw", "name", "rest"), SPELLINGS.values(), ids=SPELLINGS.keys())
def test_a_spelling_of_a_protected_exact_path_is_decided_by_its_route(raw: str, name: str, rest: str) -> None:
    assert table().lookup("GET", normalise(raw.encode())) == RouteHit(ROUTES[name], rest)


def test_a_method_the_exact_route_does_not_take_goes_where_the_exact_path_goes() -> None:
    """DELETE /public/admin is the open prefix's (the exact route takes GET and POST only): so are its spellings."""
    assert table().lookup("DELETE", "/public/admin") == RouteHit(ROUTES["public"], "/admin")
    assert table().lookup("DELETE", "/public/admin/") == RouteHit(ROUTES["public"], "/admin/")


def test_a_spelling_neither_route_takes_the_method_of_is_405_naming_both() -> None:
    shop = make("shop", prefix="/shop/", methods="GET POST")
    admin = make("shop-admin", path="/shop/admin", methods="POST PUT", allow=ADMINS)
    spelled = RouteTable.build([shop, admin])
    assert spelled.lookup("DELETE", "/shop/admin/") == WrongMethod(("GET", "POST", "PUT"))
    assert spelled.lookup("POST", "/shop/admin.json") == RouteHit(admin, "")
    assert spelled.lookup("GET", "/shop/admin/") == RouteHit(shop, "/admin/")  # where GET /shop/admin goes


def test_without_an_open_prefix_a_spelling_is_still_no_route() -> None:
    admin = make("admin", path="/admin", methods="GET", allow=ADMINS)
    table = RouteTable.build([admin, make("api", prefix="/api/", allow=ADMINS)])
    assert claiming([admin]) == frozenset()
    assert table.lookup("POST", "/admin") == WrongMethod(("GET",))
    assert table.lookup("GET", "/admin/") == NoRoute()


def test_only_exact_paths_under_a_prefix_that_decides_otherwise_claim() -> None:
    assert claiming(list(ROUTES.values())) == {"/public/admin", "/public/admin.json.bak", "/public/a", "/public/dir/"}


def test_check_says_the_exact_route_takes_the_spellings() -> None:
    text = """version: 1
providers:
  contoso: { issuer: "https://login.example.com/t/v2.0", audiences: [api://x] }
routes:
  - name: pub
    match: { path_prefix: /public/ }
    upstream: https://up.example.com/static
    allow: anyone
  - name: padmin
    match: { path: /public/admin }
    upstream: https://up.example.com/admin
    allow: [{ provider: contoso }]
"""
    assert parse_policy(text, "p.yaml", {}).warnings == (
        'p.yaml:10: routes[1].match.path: path /public/admin is inside path_prefix /public/ of route "pub" (line 5); '
        'route "padmin" takes the requests it matches '
        "and its other spellings (/public/admin/, /public/admin.json, ...)",
    )
