"""Property tests for the request around the token: path normalisation, upstream header filtering, route matching.

Each property is checked against an independent reference (a string-rewriting dot-segment remover, a brute-force
route matcher) rather than against the code's own helpers. Examples are derandomised and no database is written,
so a run is reproducible in CI.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.edge.paths import normalise
from sidecar.policy.model import ANYONE, Identity, IdentityHeaders, Match, Route
from sidecar.policy.routes import NoRoute, RouteHit, RouteTable, WrongMethod, conflicts
from sidecar.reasons import Rejection
from sidecar.upstream.pool import split_url
from sidecar.upstream.target import HOP_BY_HOP, request_headers, response_headers, target, target_url
from tests.support.examples import examples

SETTINGS = settings(max_examples=examples(1000), deadline=None, derandomize=True, database=None)
HEADER_SETTINGS = settings(SETTINGS, max_examples=examples(400))  # each example draws a dozen headers: slower

# ---------------------------------------------------------------------------------------------------- paths

# Pieces that make paths confusing, plus arbitrary bytes: hypothesis combines them far beyond a hand-made table.
_PIECES = [
    b"/", b"//", b".", b"..", b"%2e", b"%2E", b"%2f", b"%2F", b"%5c", b"%00", b"\\", b";", b"a", b"A", b"~",
    b"%41", b"%61", b"%7e", b"%25", b"%252e", b"%3f", b"%23", b"?", b"#", b"%c3%a9", b"%c0%af", b"%ed%a0%80",
    b"%ff", b"%", b"%zz", b"\t", b" ", b"\xc3\xa9",
]  # fmt: skip
# The pieces a normalised path may still hold, so that half the examples get past the refusals to the properties.
_KEPT = [b"/", b"//", b".", b"..", b"%2e", b"%2E", b";", b"a", b"A", b"~", b"%41", b"%7e", b"%25", b"%3f", b"%c3%a9"]
raw_paths = st.lists(st.sampled_from(_PIECES) | st.binary(max_size=3), max_size=16).map(b"".join)
kept_paths = st.lists(st.sampled_from(_KEPT), max_size=16).map(b"".join)
rooted_paths = (raw_paths | kept_paths).map(lambda raw: b"/" + raw)


def _reference_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 as string rewriting (a different algorithm from sidecar.edge.paths' stack), slashes merged.
    Returns "" when a `..` would climb above the root."""
    path = re.sub(r"/+", "/", path)
    while True:
        rewritten = re.sub(r"/\.(/|$)", "/", path)
        rewritten = re.sub(r"/(?!\.\.(?:/|$))[^/]+/\.\.(/|$)", "/", rewritten, count=1)
        if rewritten == path:
            break
        path = rewritten
    return "" if re.match(r"/\.\.(/|$)", path) else path


def _normalised_or_none(raw: bytes) -> str | None:
    """The normalised path, or None for a refusal. Any other exception propagates and fails the property."""
    try:
        return normalise(raw)
    except Rejection:
        return None


@SETTINGS
@given(raw=raw_paths | rooted_paths)
def test_a_path_is_normalised_or_refused_never_anything_else(raw: bytes) -> None:
    _normalised_or_none(raw)


@SETTINGS
@given(raw=rooted_paths)
def test_normalising_twice_changes_nothing(raw: bytes) -> None:
    path = _normalised_or_none(raw)
    if path is not None:
        assert normalise(path.encode("ascii")) == path


@SETTINGS
@given(raw=rooted_paths)
def test_a_normalised_path_holds_no_confusing_spelling(raw: bytes) -> None:
    path = _normalised_or_none(raw)
    if path is None:
        return
    assert path.startswith("/") and path.isascii() and path.isprintable()
    for spelling in ("//", "/./", "/../", "..", "\\", "?", "#", " "):
        assert spelling not in path
    assert not path.endswith("/.")
    assert re.search(r"%(2f|5c|00)", path, re.IGNORECASE) is None  # no encoded separator or NUL
    assert re.search(r"%(?![0-9A-F]{2})", path) is None  # every escape well-formed and upper-case


@SETTINGS
@given(raw=rooted_paths)
def test_the_upstream_decodes_the_normalised_path_to_the_decoded_request_path_normalised(raw: bytes) -> None:
    """A server like the echo upstream reads `unquote(path)`. Normalising then decoding gives what decoding then
    normalising the raw path would: no escape hides a separator or a dot segment from the matcher."""
    path = _normalised_or_none(raw)
    if path is None:
        return
    upstream_reads = unquote(path, errors="strict")
    assert upstream_reads == _reference_dot_segments(unquote(raw.decode("ascii"), errors="strict"))
    assert _reference_dot_segments(upstream_reads) == upstream_reads  # nothing left for the upstream to resolve
    assert [unquote(segment) for segment in path.split("/")] == upstream_reads.split("/")


_PREFIX_UPSTREAMS = ["http://127.0.0.1:9/api", "http://127.0.0.1:9/api/", "http://127.0.0.1:9", "http://u.test/a%20b"]


@SETTINGS
@given(raw=rooted_paths, upstream=st.sampled_from(_PREFIX_UPSTREAMS))
def test_the_http_client_sends_exactly_the_path_that_was_authorised(raw: bytes, upstream: str) -> None:
    """The URL built for a prefix route, split the way the upstream client sends it, keeps the authorised path byte
    for byte in the request target: no re-quoting, no %2F rewriting, no dot-segment resolution of its own."""
    rest = _normalised_or_none(raw)
    if rest is None:
        return
    upstream_path = target(upstream).path.rstrip("/")
    _origin, request_target = split_url(target_url(target(upstream), rest, b"x=1"))
    assert request_target == upstream_path + rest + "?x=1"


# -------------------------------------------------------------------------------------------------- headers

NAMES = IdentityHeaders()
IDENTITY = Identity("contoso", {"oid": "verified-oid", "upn": "verified@contoso.com", "tid": "t", "roles": ["r"]}, 0)
SIDECAR_VALUES = {
    b"x-forwarded-for": b"192.0.2.7",
    b"x-forwarded-proto": b"https",
    b"x-request-id": b"rid-1",
    b"x-auth-subject": b"verified-oid",
    b"x-auth-user": b"verified@contoso.com",
    b"x-auth-tenant": b"t",
    b"x-auth-roles": b"r",
    b"x-auth-provider": b"contoso",
}
# What `Connection` cannot remove: what the sidecar sets, and what it relies on in the request it forwards.
SET_OR_RELIED_ON = {*SIDECAR_VALUES, b"x-forwarded-host", b"authorization", b"content-length"}
_KNOWN_NAMES = [
    *(name.decode() for name in SIDECAR_VALUES),
    *(name.decode() for name in HOP_BY_HOP),
    "authorization", "host", "x-forwarded-host", "x-auth-other", "content-type", "x-custom",
]  # fmt: skip


@st.composite
def header_names(draw: st.DrawFn) -> bytes:
    """Known names in any case, with any `-` spelled `_`, or arbitrary token-ish names (bit masks pick which
    letters are upper-cased and which dashes become underscores: two draws, not one per character)."""
    name = draw(st.sampled_from(_KNOWN_NAMES) | st.text(alphabet="abcxyz_-", min_size=1, max_size=12))
    upper, underscore = draw(st.integers(0, 2**20)), draw(st.integers(0, 2**20))
    spelled = (
        ("_" if c == "-" and underscore >> i & 1 else c.upper() if upper >> i & 1 else c) for i, c in enumerate(name)
    )
    return "".join(spelled).encode("ascii")


@st.composite
def connection_values(draw: st.DrawFn) -> bytes:
    """`Connection` naming any headers, the sidecar's own included, in any case and spelling."""
    names = draw(st.lists(header_names(), max_size=5))
    return b", ".join(names) if names else draw(st.sampled_from([b"close", b"keep-alive", b""]))


_values = st.binary(max_size=20).map(lambda value: value.replace(b"\r", b"").replace(b"\n", b""))
client_headers = st.lists(
    st.tuples(header_names(), _values) | st.tuples(st.just(b"connection"), connection_values()), max_size=12
)


def _forward(client: list[tuple[bytes, bytes]], forward_token: bool) -> list[tuple[bytes, bytes]]:
    return request_headers(
        client,
        forward_token=forward_token,
        names=NAMES,
        identity=IDENTITY,
        client_ip="192.0.2.7",
        scheme="https",
        request_id="rid-1",
    )


def _key(name: bytes) -> bytes:
    return name.lower().replace(b"_", b"-")


@HEADER_SETTINGS
@given(client=client_headers, forward_token=st.booleans())
def test_the_sidecar_headers_reach_the_upstream_once_with_its_own_values(
    client: list[tuple[bytes, bytes]], forward_token: bool
) -> None:
    """Client copies of identity and forwarding headers, in any case or `_` spelling, are gone; `Connection` naming
    them removes nothing the sidecar sets."""
    out = _forward(client, forward_token)
    for name, value in SIDECAR_VALUES.items():
        assert [v for n, v in out if _key(n) == name] == [value]


@HEADER_SETTINGS
@given(client=client_headers, forward_token=st.booleans())
def test_no_hop_by_hop_header_and_nothing_named_by_connection_goes_upstream(
    client: list[tuple[bytes, bytes]], forward_token: bool
) -> None:
    out = _forward(client, forward_token)
    named = {_key(token.strip()) for name, value in client if name == b"connection" for token in value.split(b",")}
    for name, _ in out:
        assert _key(name) not in HOP_BY_HOP
        assert _key(name) not in named or _key(name) in SET_OR_RELIED_ON


@HEADER_SETTINGS
@given(client=client_headers)
def test_authorization_goes_upstream_only_when_the_route_forwards_the_token(client: list[tuple[bytes, bytes]]) -> None:
    out = _forward(client, forward_token=False)
    assert all(_key(name) != b"authorization" for name, _ in out)


@HEADER_SETTINGS
@given(upstream=client_headers)
def test_no_hop_by_hop_or_connection_named_header_reaches_the_client(upstream: list[tuple[bytes, bytes]]) -> None:
    """In any spelling a lenient parser reads as the same name: `Transfer_Encoding` from an upstream could frame
    the response differently for a proxy between the sidecar and the client (found by `make fuzz`)."""
    named = {_key(token.strip()) for name, value in upstream if name == b"connection" for token in value.split(b",")}
    for name, _ in response_headers(upstream):
        assert _key(name) not in HOP_BY_HOP and _key(name) not in named


# --------------------------------------------------------------------------------------------------- routes

_SEGMENTS = ["a", "b", "ab", "A"]
_METHODS = ["GET", "POST", "PUT"]
route_paths = st.lists(st.sampled_from(_SEGMENTS), max_size=3).map(lambda parts: "/" + "/".join(parts))
route_keys = st.tuples(route_paths, st.booleans()).map(
    lambda pair: pair[0] + "/" if pair[1] and pair[0] != "/" else pair[0]
)
request_paths = st.tuples(route_paths, st.lists(st.sampled_from([*_SEGMENTS, "", "b/"]), max_size=2)).map(
    lambda pair: pair[0].rstrip("/") + "".join("/" + part for part in pair[1]) or "/"
)
methods = st.none() | st.frozensets(st.sampled_from(_METHODS), min_size=1)


@st.composite
def route_sets(draw: st.DrawFn) -> list[Route]:
    specs = draw(st.lists(st.tuples(st.booleans(), route_keys, methods), max_size=8))
    routes = []
    for index, (exact, key, allowed) in enumerate(specs):
        match = Match(path=key, methods=allowed) if exact else Match(path_prefix=key, methods=allowed)
        routes.append(Route(f"r{index}", match, "http://127.0.0.1:9/", ANYONE))
    # Keep a conflict-free subset, as the loader would insist on.
    kept: list[Route] = []
    for route in routes:
        if not conflicts([*kept, route]):
            kept.append(route)
    return kept


def _takes(route: Route, path: str) -> bool:
    exact, prefix = route.match.path, route.match.path_prefix
    if exact is not None:
        return path == exact
    assert prefix is not None
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def _reference_lookup(routes: list[Route], method: str, path: str) -> RouteHit | NoRoute | WrongMethod:
    """Brute force: every route that takes the path; exact first, then the longest prefix, that takes the method."""
    matching = [route for route in routes if _takes(route, path)]
    ranked = sorted(matching, key=lambda r: (r.match.path is None, -len(r.match.path_prefix or "")))
    for route in ranked:
        if route.match.methods is None or method in route.match.methods:
            prefix = route.match.path_prefix
            return RouteHit(route, "" if prefix is None else path[len(prefix.rstrip("/")) :])
    allowed = {m for route in matching for m in route.match.methods or ()}
    return WrongMethod(tuple(sorted(allowed))) if allowed else NoRoute()


@SETTINGS
@given(routes=route_sets(), method=st.sampled_from([*_METHODS, "DELETE"]), path=request_paths)
def test_route_lookup_agrees_with_a_brute_force_matcher(routes: list[Route], method: str, path: str) -> None:
    assert RouteTable.build(routes).lookup(method, path) == _reference_lookup(routes, method, path)


@HEADER_SETTINGS
@given(client=client_headers, token=st.from_regex(r"Bearer [A-Za-z0-9._-]{1,20}", fullmatch=True))
def test_connection_cannot_strip_a_token_the_route_forwards(client: list[tuple[bytes, bytes]], token: str) -> None:
    others = [(name, value) for name, value in client if _key(name) != b"authorization"]
    out = _forward([*others, (b"authorization", token.encode())], forward_token=True)
    assert [value for name, value in out if _key(name) == b"authorization"] == [token.encode()]
