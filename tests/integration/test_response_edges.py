"""The edges of an exchange, on real sockets: a raw upstream that answers byte for byte what a test wrote, a real
sidecar process, and a client writing raw bytes. The upstream's secret URL never reaches the client (a canary in
every header it can send); bodiless answers with a length are answers, not errors; `_`-spelled framing from the
upstream is dropped; client parameters cannot shadow the upstream's; `Expect` stays with the sidecar."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

from tests.support import rawhttp
from tests.support.rawsock import connect, head
from tests.support.rawupstream import RawUpstream, Received
from tests.support.servers import SidecarProcess

POLICY = Path(__file__).with_name("edges.yaml")
EDGE_SIG = "k3Yv9%2BqW7xZt%2F0aRmN4sPcE5bL8dHjU2fGiO1yT6wQ%3D"  # as written in the URL
TRIGGER_PATH = "/workflows/edge/triggers/manual/paths/invoke"
TRIGGER_QUERY = f"api-version=2016-10-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={EDGE_SIG}"


@dataclass
class Edges:
    upstream: RawUpstream
    sidecar: SidecarProcess


@pytest.fixture(scope="module")
def edges() -> Iterator[Edges]:
    upstream = RawUpstream()
    sidecar = SidecarProcess(POLICY, {"RAW": upstream.url, "EDGE_SIG": EDGE_SIG})
    try:
        sidecar.start()
        yield Edges(upstream, sidecar)
        assert sidecar.stop() == 0
        crashes = [line for line in sidecar.lines if "Exception in ASGI application" in line]
        assert crashes == []
    finally:
        if sidecar._process is not None and sidecar._process.poll() is None:
            sidecar.stop()
        upstream.stop()


@dataclass(frozen=True)
class Head:
    status: int
    reason: str
    headers: list[tuple[str, str]]  # every header line in order, names lower-cased
    raw: bytes

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


def read_head(sock: socket.socket) -> tuple[Head, bytes]:
    """One response head (and whatever arrived after it), without reading a body: for answers that have none."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response head: {data[:300]!r}"
        data += chunk
    raw, _, rest = data.partition(b"\r\n\r\n")
    line, *lines = raw.decode("latin-1").split("\r\n")
    _, status, reason = (line.split(" ", 2) + [""])[:3]
    fields = [(name.strip().lower(), value.strip()) for name, _, value in (item.partition(":") for item in lines)]
    return Head(int(status), reason, fields, raw), rest


def answer(status: bytes, *lines: bytes, body: bytes = b"") -> bytes:
    return b"\r\n".join([b"HTTP/1.1 " + status, *lines]) + b"\r\n\r\n" + body


def ok(_request: Received) -> bytes:
    return answer(b"200 OK", b"Content-Length: 2", body=b"ok")


def read_ok(sock: socket.socket) -> tuple[int, bytes]:
    """The status and body of an answer framed by Content-Length."""
    reply, body = read_head(sock)
    [length] = reply.values("content-length")
    while len(body) < int(length):
        chunk = sock.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    return reply.status, body


# ----------------------------------------------------------------------------------------- the secret URL (item 3)

# Every response header an HTTP server can send (IANA's registry, the common non-standard ones, the obsolete
# URL-bearing ones), plus custom names. Framing headers are left out: a URL there would not be HTTP at all. The four
# that name a URL to follow (Location, Content-Location, Link, Refresh) are written as their syntax wants.
STANDARD = [
    "Accept-CH", "Accept-Patch", "Accept-Post", "Accept-Ranges", "Access-Control-Allow-Credentials",
    "Access-Control-Allow-Headers", "Access-Control-Allow-Methods", "Access-Control-Allow-Origin",
    "Access-Control-Expose-Headers", "Access-Control-Max-Age", "Age", "Allow", "Alt-Svc", "Authentication-Info",
    "Cache-Control", "Cache-Status", "CDN-Cache-Control", "Clear-Site-Data", "Connection", "Content-Base",
    "Content-Digest", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-MD5", "Content-Range",
    "Content-Security-Policy", "Content-Security-Policy-Report-Only",
    "Content-Type", "Critical-CH", "Cross-Origin-Embedder-Policy", "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy", "Date", "Digest", "Document-Policy", "ETag", "Expect-CT", "Expires",
    "Keep-Alive", "Last-Modified", "NEL", "Origin-Agent-Cluster", "Permissions-Policy", "Pragma",
    "Preference-Applied", "Proxy-Authenticate", "Proxy-Authentication-Info", "Public-Key-Pins", "Referrer-Policy",
    "Report-To", "Reporting-Endpoints", "Repr-Digest", "Retry-After", "Server", "Server-Timing",
    "Service-Worker-Allowed", "Set-Cookie", "SourceMap", "Strict-Transport-Security", "Timing-Allow-Origin", "Tk",
    "Trailer", "URI", "Upgrade", "Vary", "Via", "Want-Digest", "Warning", "WWW-Authenticate",
    "X-Content-Type-Options", "X-DNS-Prefetch-Control", "X-Frame-Options", "X-Powered-By", "X-Request-Id",
    "X-Robots-Tag", "X-XSS-Protection",
]  # fmt: skip
CUSTOM = ["X-Upstream-Url", "X-Debug", "X-Original-URL", "X-Forwarded-Host", "Location_2", "Content_Location"]


def _spellings(url: str) -> dict[str, str]:
    """The URL as servers write it into headers: plain, percent-encoded once and twice, JSON-escaped, in lower case."""
    once = quote(url, safe="")
    return {
        "plain": url,
        "encoded": once,
        "encoded-twice": quote(once, safe=""),
        "json": url.replace("/", "\\/"),
        "lower-case": url.lower(),
        "decoded": unquote(url),
        "in-a-sentence": f'moved to "{url}" (see {once})',
    }


def canary(request: Received, upstream_url: str) -> bytes:
    """A redirect whose status line and every header hold the upstream's full URL (the one it was called at)."""
    full = upstream_url + request.target.decode("latin-1")
    lines = [f"{name}: {full}" for name in STANDARD]
    lines += [f"{name}-{kind}: {text}" for name in CUSTOM for kind, text in _spellings(full).items()]
    lines += [f"Location: {full}", f"Content-Location: {full}", f'Link: <{full}>; rel="self"']
    lines.append(f"Refresh: 0; url={full}")
    lines += [f"X-{EDGE_SIG}: in-the-name", "Content-Length: 0"]
    return answer(f"302 {full}".encode("latin-1"), *(line.encode("latin-1") for line in lines))


def secret_forms() -> list[str]:
    decoded = unquote(EDGE_SIG)
    forms = [EDGE_SIG, decoded, quote(decoded, safe=""), quote(EDGE_SIG, safe=""), decoded.replace("+", " ")]
    return [form.lower() for form in forms]


CANARY_ROUTES = {
    # public path asked -> where the client is sent (the upstream's URL mapped back to the route)
    "exact-route": ("/flows/edge", TRIGGER_PATH, "/flows/edge"),
    "prefix-route": ("/files/report/7", "/api/v1/report/7", "/files/report/7"),
}


@pytest.mark.parametrize(("asked", "upstream_path", "public"), CANARY_ROUTES.values(), ids=CANARY_ROUTES.keys())
def test_the_upstreams_secret_never_reaches_the_client_in_any_header_or_the_status_line(
    asked: str, upstream_path: str, public: str, request: pytest.FixtureRequest, edges: Edges
) -> None:
    rid = "canary-" + request.node.callspec.id
    edges.upstream.answers[upstream_path] = lambda request: canary(request, edges.upstream.url)
    with connect(edges.sidecar.proxy) as sock:
        sock.sendall(head("GET", asked + "?page=2", [("X-Request-Id", rid)]))
        reply, _ = read_head(sock)
    assert edges.upstream.at(upstream_path)[-1].query.endswith(b"&page=2")  # the upstream did get its secret
    assert reply.status == 302
    scanned = reply.raw.decode("latin-1").lower()
    assert [form for form in secret_forms() if form in scanned] == []
    assert reply.values("location") == [f"{public}?page=2"]
    assert reply.values("content-location") == [f"{public}?page=2"]
    assert reply.values("link") == [f'<{public}?page=2>; rel="self"']
    assert reply.values("refresh") == [f"0; url={public}?page=2"]
    host = edges.upstream.url.removeprefix("http://")
    assert [value for _, value in reply.headers if host in value] == []
    edges.sidecar.wait_for_log("request", request_id=rid, status=302)


def test_a_location_on_the_upstream_outside_the_route_is_dropped(edges: Edges) -> None:
    elsewhere = f"{edges.upstream.url}/workflows/edge/runs/1/operations/2?sp=%2Fruns%2Fread&sig=OTHER-SIGNATURE-1"
    edges.upstream.answers[TRIGGER_PATH] = lambda _r: answer(
        b"202 Accepted", f"Location: {elsewhere}".encode(), b"Retry-After: 1", b"Content-Length: 0"
    )
    reply = rawhttp.request(edges.sidecar.proxy, b"/flows/edge", b"POST")
    assert reply.status == 202
    assert [name for name, _ in reply.headers] == ["retry-after", "content-length", "x-request-id", "connection"]


# ------------------------------------------------------------------------------------ bodiless answers (item 4)

BODILESS = {
    # method, the upstream's answer -> status and Content-Length values the client gets
    "304-to-get": ("GET", answer(b"304 Not Modified", b"Content-Length: 10", b'ETag: "a"'), 304, []),
    "304-to-head": ("HEAD", answer(b"304 Not Modified", b"Content-Length: 10", b'ETag: "a"'), 304, ["10"]),
    "204-to-get": ("GET", answer(b"204 No Content", b"Content-Length: 10", b'ETag: "a"'), 204, []),
    "204-to-head": ("HEAD", answer(b"204 No Content", b"Content-Length: 10", b'ETag: "a"'), 204, []),
    "200-to-head": ("HEAD", answer(b"200 OK", b"Content-Length: 10", b'ETag: "a"'), 200, ["10"]),
    "200-to-head-chunked": ("HEAD", answer(b"200 OK", b"Transfer-Encoding: chunked", b'ETag: "a"'), 200, []),
    "100-with-a-length-then-200": (
        "GET",
        answer(b"100 Continue", b"Content-Length: 5") + answer(b"200 OK", b"Content-Length: 0", b'ETag: "a"'),
        200,
        ["0"],
    ),
    "103-with-a-length-then-200": (
        "GET",
        answer(b"103 Early Hints", b"Content-Length: 5", b"Link: </s.css>; rel=preload")
        + answer(b"200 OK", b"Content-Length: 0", b'ETag: "a"'),
        200,
        ["0"],
    ),
}


@pytest.mark.parametrize(("method", "raw", "status", "lengths"), BODILESS.values(), ids=BODILESS.keys())
def test_a_bodiless_answer_with_a_length_is_relayed_and_the_connection_kept(
    method: str, raw: bytes, status: int, lengths: list[str], request: pytest.FixtureRequest, edges: Edges
) -> None:
    case = request.node.callspec.id
    edges.upstream.answers[f"/plain/{case}"] = lambda _r: raw
    edges.upstream.answers["/plain/next"] = ok
    with connect(edges.sidecar.proxy) as sock:
        sock.sendall(head(method, f"/plain/{case}", [("X-Request-Id", f"bodiless-{case}")]))
        reply, rest = read_head(sock)
        assert (reply.status, reply.values("content-length"), reply.values("etag")) == (status, lengths, ['"a"'])
        assert rest == b"" and reply.values("connection") == []
        sock.sendall(head("GET", "/plain/next"))  # the same connection serves the next request
        assert read_ok(sock) == (200, b"ok")
    edges.sidecar.wait_for_log("request", request_id=f"bodiless-{case}", status=status, decision="allow")


# ---------------------------------------------------------------------------------- `_`-spelled framing (item 5)


def test_framing_and_hop_by_hop_headers_spelled_with_underscores_never_reach_the_client(edges: Edges) -> None:
    spelled = [b"Content_Length: 99", b"CONTENT_LENGTH: 98", b"Transfer_Encoding: chunked", b"Keep_Alive: 5"]
    spelled += [b"Proxy_Connection: keep-alive", b"X_Request_Id: theirs", b"X_Custom: kept"]
    sent = answer(b"200 OK", b"Content-Length: 2", *spelled, body=b"ok")
    edges.upstream.answers["/plain/underscores"] = lambda _r: sent
    reply = rawhttp.request(edges.sidecar.proxy, b"/plain/underscores")
    assert [name for name, _ in reply.headers] == ["content-length", "x_custom", "x-request-id", "connection"]
    assert (reply.headers[:2], reply.body) == ([("content-length", "2"), ("x_custom", "kept")], b"ok")


# --------------------------------------------------------------------------------- the query's own names (item 6)

SHADOWING = b"sig[]=a&%20sig=b&sig%00=c&x=1;sig=d&SIG=e&%73ig=f&sig.=g&sig_=h&+sig=i&sig%20=j&API-VERSION=k&id=7"


def test_client_parameters_cannot_shadow_the_upstreams_own(edges: Edges) -> None:
    edges.upstream.answers[TRIGGER_PATH] = ok
    reply = rawhttp.request(edges.sidecar.proxy, b"/flows/edge?" + SHADOWING, b"POST")
    assert reply.status == 200
    assert edges.upstream.at(TRIGGER_PATH)[-1].query == f"{TRIGGER_QUERY}&id=7".encode()


def test_a_route_with_forward_query_false_sends_the_upstream_only_its_own_query(edges: Edges) -> None:
    edges.upstream.answers["/noquery"] = ok
    reply = rawhttp.request(edges.sidecar.proxy, b"/flows/noquery?id=7&page=2&sig=x")
    assert reply.status == 200
    assert [seen.query for seen in edges.upstream.at("/noquery")] == [f"sig={EDGE_SIG}".encode()]


# --------------------------------------------------------------------------------------- Expect (item 7)


def test_expect_100_continue_is_answered_by_the_sidecar_and_never_forwarded(edges: Edges) -> None:
    edges.upstream.answers["/plain/upload"] = ok
    headers = [("Expect", "100-continue"), ("Content-Length", "5"), ("X-Request-Id", "expect-1")]
    with connect(edges.sidecar.proxy) as sock:
        sock.sendall(head("POST", "/plain/upload", headers))
        interim, rest = read_head(sock)  # the body is sent only once the sidecar asked for it
        assert (interim.status, interim.headers, rest) == (100, [], b"")
        sock.sendall(b"hello")
        assert read_ok(sock) == (200, b"ok")
    [seen] = edges.upstream.at("/plain/upload")
    assert [name for name, _ in seen.headers if name == b"expect"] == []
    assert seen.body == b"hello"
