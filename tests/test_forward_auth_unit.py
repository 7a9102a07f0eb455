"""Forward-auth in-process: which (method, path) `original_request` believes for each `--forward-auth-ingress` and
what it refuses, then the endpoint driven through the ASGI interface only (scope, receive, send), built as
sidecar/ops/run.py builds it. In-process so that `make mutate` can test its mutants; tests/integration and
tests/ingress drive the same answers over the network and behind the real ingresses."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from sidecar.edge.asgi import Message
from sidecar.edge.forward_auth import ORIGINAL_HEADERS, READS, ForwardAuth, original_request
from sidecar.edge.gate import Gate
from sidecar.edge.runtime import Runtime
from sidecar.observe import log
from sidecar.observe.metrics import Metrics
from sidecar.options import FORWARD_AUTH_INGRESSES, ServeOptions
from sidecar.policy.load import parse_policy
from sidecar.reasons import Reason, Rejection
from tests.support.servers import ThreadServer, free_closed_port, serve_demo_issuer

PREFIX = b"/_auth"
Headers = list[tuple[bytes, bytes]]


def asks(ingress: str, method: str, uri: str) -> tuple[str, bytes, Headers]:
    """The auth request each ingress sends about the original (method, uri): its method, raw path and headers."""
    if ingress == "envoy":  # ext_authz: the original method, at path_prefix + the original path (no header)
        return method, PREFIX + uri.encode(), []
    if ingress == "ingress-nginx":  # an absolute URL, built from the client's Host
        return (
            "GET",
            PREFIX,
            [(b"x-original-url", f"https://gw.example{uri}".encode()), (b"x-original-method", method.encode())],
        )
    uri_name, method_name = {"nginx": (b"x-original-uri", b"x-original-method")}.get(
        ingress, (b"x-forwarded-uri", b"x-forwarded-method")
    )
    return "GET", PREFIX, [(b"x-forwarded-proto", b"https"), (uri_name, uri.encode()), (method_name, method.encode())]


def believed(ingress: str, method: str, raw_path: bytes, headers: Headers) -> tuple[str, bytes]:
    return original_request(READS[ingress], headers, method, raw_path, PREFIX)


def refused(ingress: str, method: str, raw_path: bytes, headers: Headers) -> Reason:
    with pytest.raises(Rejection) as caught:
        believed(ingress, method, raw_path, headers)
    return caught.value.reason


def test_every_ingress_is_in_the_table() -> None:
    assert set(READS) == set(FORWARD_AUTH_INGRESSES)


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
def test_each_ingress_is_believed_where_it_puts_the_original(ingress: str) -> None:
    method, raw_path, headers = asks(ingress, "POST", "/flows/payroll")
    assert believed(ingress, method, raw_path, headers) == ("POST", b"/flows/payroll")


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
def test_the_query_is_not_part_of_the_path(ingress: str) -> None:
    """The ingresses put the query in the URI header; decide() matches routes on the path alone. (Envoy's query is
    in the scope's query_string, never in raw_path.) A raw `#` is refused: see URIS below."""
    uri = "/files/a%20b" if ingress == "envoy" else "/files/a%20b?sig=x"
    assert believed(ingress, *asks(ingress, "GET", uri)) == ("GET", b"/files/a%20b")


# Every spelling of an original URI or method that an ingress or framework reads, `_` for `-` included (ASGI names
# are lower case: the server lower-cases them).
SPELLINGS = sorted(ORIGINAL_HEADERS | {name.replace(b"-", b"_") for name in ORIGINAL_HEADERS})
FOREIGN = [
    (ingress, spelling)
    for ingress in FORWARD_AUTH_INGRESSES
    for spelling in SPELLINGS
    if READS[ingress] is None or spelling not in READS[ingress]  # type: ignore[operator]
]  # fmt: skip


def _spoof(spelling: bytes) -> bytes:
    return b"OPTIONS" if spelling.endswith(b"method") else b"/public/x"


@pytest.mark.parametrize(("ingress", "spelling"), FOREIGN, ids=[f"{i}-{s.decode()}" for i, s in FOREIGN])
@pytest.mark.parametrize("where", ["before", "after"])
def test_every_other_spelling_is_refused_as_spoofed(ingress: str, spelling: bytes, where: str) -> None:
    """A header the configured ingress does not set was the client's (the ingresses pass those through): whichever
    the order, the request is refused, never decided on the client's choice of path or method."""
    method, raw_path, headers = asks(ingress, "POST", "/flows/payroll")
    spoof = (spelling, _spoof(spelling))
    sent = [spoof, *headers] if where == "before" else [*headers, spoof]
    assert refused(ingress, method, raw_path, sent) is Reason.FORWARD_AUTH_SPOOFED


# The method and URL overrides the proxy drops on the way upstream (docs/forwarding.md). In forward-auth the
# ingress, not the sidecar, forwards the request: the application would receive them (Symfony and Laravel read
# X-HTTP-Method-Override on every POST; IIS and Zend X-Rewrite-URL), and act on another method or path than the
# one decided. Written out here rather than imported, so that a name dropped from the module fails this test.
OVERRIDES = [b"x-http-method-override", b"x-http-method", b"x-method-override", b"x-rewrite-url"]
OVERRIDE_SPELLINGS = sorted({*OVERRIDES, *(name.replace(b"-", b"_") for name in OVERRIDES)})


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
@pytest.mark.parametrize("spelling", OVERRIDE_SPELLINGS, ids=[s.decode() for s in OVERRIDE_SPELLINGS])
def test_a_method_or_url_override_is_refused_as_spoofed(ingress: str, spelling: bytes) -> None:
    """A POST to an open route carrying `X-HTTP-Method-Override: DELETE` is a DELETE to the application behind
    the ingress: the request is refused, whatever the override says and wherever it stands."""
    method, raw_path, headers = asks(ingress, "POST", "/orders")
    for sent in ([(spelling, b"DELETE"), *headers], [*headers, (spelling, b"/admin")]):
        assert refused(ingress, method, raw_path, sent) is Reason.FORWARD_AUTH_SPOOFED


OWN = [(ingress, name) for ingress, reads in READS.items() if reads is not None for name in reads]


@pytest.mark.parametrize(("ingress", "name"), OWN, ids=[f"{i}-{n.decode()}" for i, n in OWN])
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_second_copy_of_the_ingress_header_is_refused(ingress: str, name: bytes, where: str) -> None:
    """nginx and Traefik append theirs to the client's copy: which one is the ingress's cannot be told."""
    method, raw_path, headers = asks(ingress, "POST", "/flows/payroll")
    copy = (name, b"https://gw.example/public/x" if ingress == "ingress-nginx" else _spoof(name))
    sent = [copy, *headers] if where == "before" else [*headers, copy]
    assert refused(ingress, method, raw_path, sent) is Reason.FORWARD_AUTH_SPOOFED


@pytest.mark.parametrize("ingress", [ingress for ingress, reads in READS.items() if reads is not None])
@pytest.mark.parametrize("missing", ["uri", "method", "empty-method"])
def test_an_ingress_that_does_not_say_both_is_never_guessed(ingress: str, missing: str) -> None:
    """Without the original method the auth request's own GET would be decided (a POST to a GET-only open route);
    without the original URI, the auth path. Both are a misconfigured ingress: invalid_path."""
    uri_name, method_name = READS[ingress]  # type: ignore[misc]
    method, raw_path, headers = asks(ingress, "POST", "/public/x")
    if missing == "empty-method":
        headers = [(name, b"" if name == method_name else value) for name, value in headers]
    else:
        headers = [(name, value) for name, value in headers if name != (uri_name if missing == "uri" else method_name)]
    assert refused(ingress, method, raw_path, headers) is Reason.INVALID_PATH


def test_the_method_is_read_in_upper_case() -> None:
    headers = [(b"x-original-uri", b"/flows/payroll"), (b"x-original-method", b"post")]
    assert believed("nginx", "GET", PREFIX, headers) == ("POST", b"/flows/payroll")


@pytest.mark.parametrize(
    ("raw_path", "expected"),
    [(b"/_auth/flows/payroll", b"/flows/payroll"), (b"/_auth//x", b"//x"), (b"/_auth/", b"/")],
)
def test_envoy_asks_at_the_prefix_plus_the_original_path(raw_path: bytes, expected: bytes) -> None:
    assert believed("envoy", "DELETE", raw_path, []) == ("DELETE", expected)


@pytest.mark.parametrize("raw_path", [b"/_auth", b"/_authx/flows/payroll", b"/flows/payroll", b"/x/_auth/y"])
def test_envoy_outside_the_prefix_is_refused(raw_path: bytes) -> None:
    assert refused("envoy", "GET", raw_path, []) is Reason.INVALID_PATH


# The original URI as the ingress sent it -> the path decided on (None: refused, invalid_path).
URIS: dict[str, tuple[bytes, bytes | None]] = {
    "origin-form": (b"/flows/payroll", b"/flows/payroll"),
    "lowest-and-highest-printable-bytes": (b"/!~", b"/!~"),
    "absolute-http": (b"http://gw/flows/payroll", b"/flows/payroll"),
    "absolute-https-upper-case-scheme": (b"HTTPS://gw/p?q", b"/p"),
    "absolute-root": (b"https://gw/", b"/"),
    "absolute-with-port": (b"https://gw.example:8443/p", b"/p"),
    "absolute-ipv6": (b"https://[::1]:8443/p", b"/p"),
    "absolute-every-host-character": (b"https://Az09.-_~:[]/p", b"/p"),
    "absolute-path-keeps-its-slashes": (b"https://gw//a/b", b"//a/b"),
    "absolute-with-a-url-in-its-path": (b"https://gw/go/https://x.example/", b"/go/https://x.example/"),
    "two-question-marks": (b"/p?a?b", b"/p"),
    # RFC 9112 has no fragment in a request target: nginx forwards a raw `#` to the application as it came, which
    # may read it as a path character (`/public/x#/../../admin` is `/admin` once its dot segments go).
    "fragment": (b"/public/x#/../../admin", None),
    "two-fragments": (b"/p#a#b", None),
    "fragment-before-a-question-mark": (b"/p#f?x", None),
    "fragment-in-the-query": (b"/p?a#b", None),
    "empty-fragment": (b"/p#", None),
    "absolute-with-a-fragment": (b"https://gw/public/x#/../../admin", None),
    "space": (b"/public/x /flows/payroll", None),
    "tab": (b"/public/\tx", None),
    "newline": (b"/public/x\n", None),
    "nul": (b"/public/x\x00", None),
    "del": (b"/public/x\x7f", None),
    "non-ascii": (b"/public/\xc3\xa9", None),
    "high-byte": (b"/public/\xff", None),
    "relative": (b"public/x", None),
    "no-scheme-separator": (b"https:/gw/p", None),
    "other-scheme": (b"ftp://gw/public/x", None),
    "no-path": (b"https://gw", None),
    "query-in-the-host": (b"https://evil?/public/x", None),
    "userinfo": (b"https://ev@il/public/x", None),
    "fragment-in-the-host": (b"https://gw#/public/x", None),
    "percent-in-the-host": (b"https://g%77/p", None),
}


@pytest.mark.parametrize(("uri", "expected"), URIS.values(), ids=URIS.keys())
def test_the_original_uri_is_read_strictly(uri: bytes, expected: bytes | None) -> None:
    """ingress-nginx builds X-Original-URL from the client's Host (nginx lets `?`, `#`, `@` through), and a URL
    parser would silently drop tabs and newlines: anything but a plain URL is refused, not guessed."""
    headers = [(b"x-original-url", uri), (b"x-original-method", b"GET")]
    if expected is None:
        assert refused("ingress-nginx", "GET", PREFIX, headers) is Reason.INVALID_PATH
    else:
        assert believed("ingress-nginx", "GET", PREFIX, headers) == ("GET", expected)


# --- the endpoint through the ASGI interface, built as sidecar/ops/run.py builds it ------------------------------

APP_ORIGIN = "https://app.example.com"
POLICY = """\
version: 1
realm: fa-realm
trusted_proxies: [10.0.0.0/8]  # the ingress: its X-Forwarded-For names the client
providers:
  contoso:
    issuer: ${ISSUER}/11111111-2222-3333-4444-555555555555/v2.0
    audiences: [api://trigger-gateway]
routes:  # upstreams on a closed port: forward-auth never calls one (a forwarded request would be a 502)
  - name: payroll
    match: { path: /flows/payroll, methods: [POST] }
    upstream: http://127.0.0.1:${CLOSED}/payroll?sig=S3CRET
    allow: [{ provider: contoso, users: [lisa@contoso.com] }]
  - name: status
    match: { path_prefix: /public/, methods: [GET, HEAD] }
    upstream: http://127.0.0.1:${CLOSED}/static
    allow: anyone
  - name: browser
    match: { path: /flows/browser, methods: [GET, POST] }
    upstream: http://127.0.0.1:${CLOSED}/browser
    allow: [{ provider: contoso }]
    cors: { origins: ['https://app.example.com'], headers: [Authorization], methods: [POST] }
  - name: limited
    match: { path: /flows/limited, methods: [POST] }
    upstream: http://127.0.0.1:${CLOSED}/limited
    allow: [{ provider: contoso }]
    rate_limit: { per: subject, requests: 2, window: 1h }
""".replace("\\\\\\n", "\\n")
LISA: dict[str, Any] = {
    "oid": "aaaaaaaa-0000-0000-0000-00000000000a",
    "upn": "lisa@contoso.com",
    "roles": ["Payroll.Run", "Audit"],
}
TOM: dict[str, Any] = {"oid": "aaaaaaaa-0000-0000-0000-00000000000b", "upn": "tom@contoso.com"}
IDENTITY_HEADERS = [b"x-auth-subject", b"x-auth-user", b"x-auth-tenant", b"x-auth-roles", b"x-auth-provider"]


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def values(self, name: bytes) -> list[bytes]:
        """Every occurrence of a header, in order (never through a dict)."""
        return [value for key, value in self.headers if key == name]

    def problem(self) -> dict[str, Any]:
        assert self.values(b"content-type") == [b"application/problem+json"]
        document: dict[str, Any] = json.loads(self.body)
        return document


@dataclass
class Sidecar:
    """A Gate with forward-auth as `serve` runs it, and what it counted and logged."""

    app: Gate
    runtime: Runtime
    registry: CollectorRegistry
    lines: list[dict[str, Any]] = field(default_factory=list)

    async def call(
        self, method: str, raw_path: bytes, headers: list[tuple[bytes, bytes]], client: str = "127.0.0.1"
    ) -> Answer:
        """One HTTP exchange through the ASGI interface: the scope a listener builds, a body-less receive, and
        the messages sent back."""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": raw_path.decode("latin-1"),
            "raw_path": raw_path,
            "query_string": b"",
            "headers": headers,
            "client": (client, 40000),
            "server": ("127.0.0.1", 8080),
        }
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
        assert sent[1].get("more_body", False) is False
        return Answer(sent[0]["status"], list(sent[0]["headers"]), sent[1]["body"])

    async def ask(
        self, ingress: str, method: str, uri: str, extra: Sequence[tuple[bytes, bytes]] = (), client: str = "127.0.0.1"
    ) -> Answer:
        """The auth request `ingress` sends about the original (method, uri), with the client's `extra` headers."""
        auth_method, raw_path, headers = asks(ingress, method, uri)
        return await self.call(auth_method, raw_path, [*headers, *extra], client)

    def counters(self) -> dict[tuple[str, ...], float]:
        """The requests and rejections counted so far: (name, label values...) -> count."""
        wanted = {
            "sidecar_requests_total": ("route", "method", "code"),
            "sidecar_rejections_total": ("route", "reason", "mode"),
        }
        return {
            (
                sample.name.removeprefix("sidecar_").removesuffix("_total"),
                *(sample.labels[label] for label in wanted[sample.name]),
            ): sample.value
            for metric in self.registry.collect()
            for sample in metric.samples
            if sample.name in wanted
        }

    def counted_since(self, before: dict[tuple[str, ...], float]) -> dict[tuple[str, ...], float]:
        """What the requests since `before` counted (every change: a count made twice or in the wrong place shows)."""
        return {
            key: value - before.get(key, 0.0) for key, value in self.counters().items() if value != before.get(key, 0.0)
        }


Build = Callable[..., Awaitable[Sidecar]]
# One loop for the module: the sidecars are built once each (a Runtime's HTTP client costs ~0.2 s to make), and
# each test reads counters as differences and the log lines of its own requests.
module_loop = pytest.mark.asyncio(loop_scope="module")


def bearer(issuer: DemoIssuer, who: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    minted = issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", **who})
    return [(b"authorization", f"Bearer {minted}".encode())]


@pytest.fixture(scope="module")
def demo_issuer() -> Iterator[tuple[DemoIssuer, ThreadServer]]:
    issuer, server = serve_demo_issuer()
    yield issuer, server
    server.stop()


@pytest.fixture(scope="module")
def access_lines() -> Iterator[list[dict[str, Any]]]:
    """The access log's records (through `logging`: JSON lines are otherwise written straight to stdout)."""
    lines: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(dict(record.fields))  # type: ignore[attr-defined]

    logger = logging.getLogger("sidecar.access")
    handler, level = Keep(), logger.level
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(log._lines, "direct", False)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            yield lines
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)


@pytest.fixture(autouse=True)
def _own_lines(request: pytest.FixtureRequest) -> None:
    """Each test reads the log lines of its own requests only."""
    if "build" in request.fixturenames:
        request.getfixturevalue("access_lines").clear()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def build(
    demo_issuer: tuple[DemoIssuer, ThreadServer], access_lines: list[dict[str, Any]]
) -> AsyncIterator[Build]:
    built: dict[tuple[str | None, bool, str | None], Sidecar] = {}
    environ = {"ISSUER": demo_issuer[1].url, "CLOSED": str(free_closed_port())}

    async def make(ingress: str | None = "nginx", audit: bool = False, path: str | None = "/_auth") -> Sidecar:
        if (ingress, audit, path) in built:
            return built[ingress, audit, path]
        flags = {"config": "fa.yaml", "forward_auth_path": path, "forward_auth_ingress": ingress, "audit": audit}
        options = ServeOptions.resolve(flags, {})
        policy = parse_policy(POLICY, "fa.yaml", environ)
        # As sidecar/ops/run.py: one runtime, `--audit`, the forward-auth endpoint, the gate that routes to it.
        registry = CollectorRegistry()
        runtime = Runtime.create(policy, "digest", Metrics(registry))
        runtime.audit_all = options.audit
        gate = Gate(runtime, ForwardAuth.configured(runtime, options))
        await runtime.keys.prime(policy.providers.values())  # what fetch_keys does first, awaited here
        assert runtime.ready()
        built[ingress, audit, path] = Sidecar(gate, runtime, registry, access_lines)
        return built[ingress, audit, path]

    yield make
    for sidecar in built.values():
        await sidecar.runtime.close()


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
@module_loop
async def test_an_allowed_caller_gets_200_and_the_identity_headers(
    ingress: str, build: Build, demo_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    sidecar = await build(ingress)
    extra = [*bearer(demo_issuer[0], LISA), (b"x-request-id", b"fa-allow-1")]
    before = sidecar.counters()
    answer = await sidecar.ask(ingress, "POST", "/flows/payroll", extra)
    assert (answer.status, answer.body) == (200, b"")
    assert answer.headers == [
        (b"content-length", b"0"),
        (b"cache-control", b"no-store"),
        (b"x-request-id", b"fa-allow-1"),
        (b"x-auth-subject", LISA["oid"].encode()),
        (b"x-auth-user", b"lisa@contoso.com"),
        (b"x-auth-tenant", CONTOSO_TENANT.encode()),
        (b"x-auth-roles", b"Payroll.Run,Audit"),
        (b"x-auth-provider", b"contoso"),
    ]
    assert sidecar.counted_since(before) == {("requests", "payroll", "POST", "200"): 1}
    [line] = sidecar.lines
    assert (line["forward_auth"], line["request_id"]) == (True, "fa-allow-1")
    assert (line["decision"], line["status"], line["method"], line["path"]) == ("allow", 200, "POST", "/flows/payroll")
    assert (line["route"], line["provider"], line["subject"]) == ("payroll", "contoso", LISA["oid"])


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
@module_loop
async def test_an_open_route_is_200_with_every_identity_header_empty(ingress: str, build: Build) -> None:
    """An ingress copying the identity headers must overwrite a client's own X-Auth-User, not keep it."""
    sidecar = await build(ingress)
    answer = await sidecar.ask(ingress, "GET", "/public/x", [(b"x-auth-user", b"admin")])
    assert answer.status == 200
    assert [(name, value) for name, value in answer.headers if name.startswith(b"x-auth-")] == [
        (name, b"") for name in IDENTITY_HEADERS
    ]


UNDERSCORED = [b"x_auth_user", b"x-auth_user", b"x_auth-subject", b"x_auth_roles"]


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
@pytest.mark.parametrize("name", UNDERSCORED, ids=[n.decode() for n in UNDERSCORED])
@module_loop
async def test_a_clients_identity_header_spelled_with_underscores_is_refused(
    ingress: str, name: bytes, build: Build
) -> None:
    """The ingress overwrites X-Auth-User with the answer's value, not a client's X_Auth_User, which Envoy and
    Traefik pass on to the application and which PHP, uWSGI and older gunicorn and Puma read as X-Auth-User (the
    proxy strips it; here the sidecar cannot): a tokenless call to an open route naming itself admin that way is
    403 forward_auth_spoofed, counted, not 200."""
    sidecar = await build(ingress)
    before = sidecar.counters()
    answer = await sidecar.ask(ingress, "GET", "/public/x", [(name, b"admin@contoso.com")])
    assert (answer.status, answer.problem()["reason"]) == (403, "forward_auth_spoofed")
    assert sidecar.counted_since(before)[("rejections", "(none)", "forward_auth_spoofed", "enforce")] == 1


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
@module_loop
async def test_a_missing_token_is_401_with_the_challenge_and_counted(ingress: str, build: Build) -> None:
    sidecar = await build(ingress)
    before = sidecar.counters()
    answer = await sidecar.ask(ingress, "POST", "/flows/payroll", [(b"x-request-id", b"fa-401")])
    assert answer.status == 401
    assert answer.values(b"www-authenticate") == [b'Bearer realm="fa-realm"']
    assert answer.values(b"x-request-id") == [b"fa-401"]
    problem = answer.problem()
    assert (problem["status"], problem["reason"], problem["route"]) == (401, "missing_token", "payroll")
    assert not [name for name, _ in answer.headers if name.startswith(b"x-auth-")]
    assert sidecar.counted_since(before) == {
        ("requests", "payroll", "POST", "401"): 1,
        ("rejections", "payroll", "missing_token", "enforce"): 1,
    }
    [line] = sidecar.lines
    assert (line["decision"], line["status"], line["reason"], line["forward_auth"]) == (
        "reject",
        401,
        "missing_token",
        True,
    )


@module_loop
async def test_a_caller_no_rule_allows_is_403_insufficient_scope(
    build: Build, demo_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    sidecar = await build()
    before = sidecar.counters()
    answer = await sidecar.ask("nginx", "POST", "/flows/payroll", bearer(demo_issuer[0], TOM))
    assert answer.status == 403
    assert answer.problem()["reason"] == "not_allowed"
    assert b'error="insufficient_scope"' in answer.values(b"www-authenticate")[0]
    assert sidecar.counted_since(before)[("rejections", "payroll", "not_allowed", "enforce")] == 1


REFUSALS = {
    # original method, uri -> reason; nginx auth_request understands only 2xx, 401 and 403: each is a 403 here
    "no-route": ("GET", "/nowhere", "no_route"),
    "wrong-method": ("GET", "/flows/payroll", "method_not_allowed"),
    "bad-path": ("GET", "/a/%2e%2e/..", "invalid_path"),
    "non-ascii-method": ("P\xd6ST", "/flows/payroll", "method_not_allowed"),
}


@pytest.mark.parametrize(("method", "uri", "reason"), REFUSALS.values(), ids=REFUSALS.keys())
@module_loop
async def test_every_other_refusal_is_a_403(method: str, uri: str, reason: str, build: Build) -> None:
    sidecar = await build()
    headers = [(b"x-original-uri", uri.encode()), (b"x-original-method", method.encode("latin-1"))]
    before = sidecar.counters()
    answer = await sidecar.call("GET", b"/_auth", headers)
    assert answer.status == 403
    assert (answer.problem()["reason"], answer.problem()["status"]) == (reason, 403)
    assert answer.values(b"allow") == []
    method_label = method if method.isascii() else "OTHER"  # a client cannot mint label values
    assert sidecar.counted_since(before) == {
        ("requests", "(none)", method_label, "403"): 1,
        ("rejections", "(none)", reason, "enforce"): 1,
    }


@pytest.mark.parametrize(("ingress", "spelling"), FOREIGN, ids=[f"{i}-{s.decode()}" for i, s in FOREIGN])
@module_loop
async def test_a_spoofed_original_is_refused_counted_and_never_logged_as_a_path(
    ingress: str, spelling: bytes, build: Build, demo_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    """A tokenless POST to a protected route that also names an open path (or OPTIONS) in a header this ingress
    does not set: 403 forward_auth_spoofed, counted, in any order and with a good token too; the log line holds no
    path the client made up."""
    sidecar = await build(ingress)
    spoof = [(spelling, _spoof(spelling))]
    auth_method, raw_path, headers = asks(ingress, "POST", "/flows/payroll")
    before = sidecar.counters()
    for sent in ([*spoof, *headers], [*headers, *spoof], [*headers, *spoof, *bearer(demo_issuer[0], LISA)]):
        answer = await sidecar.call(auth_method, raw_path, sent)
        assert answer.status == 403
        assert answer.problem()["reason"] == "forward_auth_spoofed"
        assert not [name for name, _ in answer.headers if name.startswith(b"x-auth-")]
    assert sidecar.counted_since(before) == {
        ("requests", "(none)", auth_method, "403"): 3,
        ("rejections", "(none)", "forward_auth_spoofed", "enforce"): 3,
    }
    assert [(line["reason"], line["path"], line["route"]) for line in sidecar.lines] == [
        ("forward_auth_spoofed", None, None)
    ] * 3


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
@module_loop
async def test_a_method_override_is_refused_counted_even_with_a_good_token(
    ingress: str, build: Build, demo_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    """lisa may POST to payroll; her POST carrying X-HTTP-Method-Override: DELETE would run a DELETE behind the
    ingress, which no rule decided: 403 forward_auth_spoofed, no identity headers, counted with route (none)."""
    sidecar = await build(ingress)
    auth_method, raw_path, headers = asks(ingress, "POST", "/flows/payroll")
    before = sidecar.counters()
    answer = await sidecar.call(
        auth_method, raw_path, [*headers, *bearer(demo_issuer[0], LISA), (b"x-http-method-override", b"DELETE")]
    )
    assert (answer.status, answer.problem()["reason"]) == (403, "forward_auth_spoofed")
    assert not [name for name, _ in answer.headers if name.startswith(b"x-auth-")]
    assert sidecar.counted_since(before) == {
        ("requests", "(none)", auth_method, "403"): 1,
        ("rejections", "(none)", "forward_auth_spoofed", "enforce"): 1,
    }


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
@module_loop
async def test_the_options_trick_is_refused(ingress: str, build: Build) -> None:
    """A real POST whose client adds X-Original-Method: OPTIONS (or X-Forwarded-Method) and the CORS preflight
    headers would be an allowed preflight without a token; it is refused, for every ingress."""
    sidecar = await build(ingress)
    preflight = [(b"origin", APP_ORIGIN.encode()), (b"access-control-request-method", b"POST")]
    auth_method, raw_path, headers = asks(ingress, "POST", "/flows/browser")
    for name in (b"x-original-method", b"x-forwarded-method"):
        answer = await sidecar.call(auth_method, raw_path, [*headers, (name, b"OPTIONS"), *preflight])
        assert answer.status == 403
        assert answer.problem()["reason"] == "forward_auth_spoofed"


@pytest.mark.parametrize("ingress", FORWARD_AUTH_INGRESSES)
@module_loop
async def test_a_real_preflight_is_200_without_a_token(ingress: str, build: Build) -> None:
    """The ingress asks about a browser's own OPTIONS: allowed without a token (200: the ingress passes it on),
    or 403 cors_refused for an origin the route does not list."""
    sidecar = await build(ingress)
    preflight = [(b"origin", APP_ORIGIN.encode()), (b"access-control-request-method", b"POST")]
    answer = await sidecar.ask(ingress, "OPTIONS", "/flows/browser", preflight)
    assert (answer.status, answer.body) == (200, b"")
    assert answer.values(b"content-length") == [b"0"]
    assert not [name for name, _ in answer.headers if name.startswith(b"x-auth-")]
    other = [(b"origin", b"https://evil.example"), (b"access-control-request-method", b"POST")]
    refused_answer = await sidecar.ask(ingress, "OPTIONS", "/flows/browser", other)
    assert refused_answer.status == 403
    assert refused_answer.problem()["reason"] == "cors_refused"
    assert [line.get("forward_auth") for line in sidecar.lines] == [True, True]
    # Not a preflight (no Access-Control-Request-Method): an OPTIONS request needs its token like any other.
    plain = await sidecar.ask(ingress, "OPTIONS", "/flows/browser", [(b"origin", APP_ORIGIN.encode())])
    assert plain.status == 403
    assert plain.problem()["reason"] == "method_not_allowed"


@module_loop
async def test_a_refusal_on_a_cors_route_lets_the_page_read_it(build: Build) -> None:
    sidecar = await build()
    answer = await sidecar.ask("nginx", "POST", "/flows/browser", [(b"origin", APP_ORIGIN.encode())])
    assert answer.status == 401
    assert answer.values(b"vary") == [b"Origin"]
    assert answer.values(b"access-control-allow-origin") == [APP_ORIGIN.encode()]
    assert answer.values(b"access-control-expose-headers") == [b"www-authenticate, retry-after, x-request-id"]


@module_loop
async def test_the_rate_limit_counts_allowed_requests_only_and_refuses_with_403(
    build: Build, demo_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    sidecar = await build()
    token = bearer(demo_issuer[0], LISA)
    before = sidecar.counters()
    assert (await sidecar.ask("nginx", "POST", "/flows/limited")).status == 401  # spends nothing
    assert [(await sidecar.ask("nginx", "POST", "/flows/limited", token)).status for _ in range(2)] == [200, 200]
    answer = await sidecar.ask("nginx", "POST", "/flows/limited", token)
    assert answer.status == 403  # 429 is not an answer nginx auth_request understands
    assert answer.problem()["reason"] == "rate_limited"
    assert len(answer.values(b"retry-after")) == 1
    assert sidecar.counted_since(before) == {
        ("requests", "limited", "POST", "401"): 1,
        ("requests", "limited", "POST", "200"): 2,
        ("requests", "limited", "POST", "403"): 1,
        ("rejections", "limited", "missing_token", "enforce"): 1,
        ("rejections", "limited", "rate_limited", "enforce"): 1,
    }
    assert sidecar.lines[-1]["decision"] == "reject"


@module_loop
async def test_audit_mode_answers_200_to_a_would_be_refusal_and_counts_it(build: Build) -> None:
    sidecar = await build(audit=True)
    before = sidecar.counters()
    answer = await sidecar.ask("nginx", "POST", "/flows/payroll")
    assert answer.status == 200
    assert sidecar.counted_since(before) == {
        ("requests", "payroll", "POST", "200"): 1,
        ("rejections", "payroll", "missing_token", "audit"): 1,
    }
    assert (sidecar.lines[-1]["decision"], sidecar.lines[-1]["status"]) == ("audit_forward", 200)


@module_loop
async def test_audit_mode_never_lets_a_spoof_through(build: Build) -> None:
    sidecar = await build(audit=True)
    headers = [(b"x-original-uri", b"/flows/payroll"), (b"x-original-method", b"POST"), (b"x-original-url", b"/p")]
    before = sidecar.counters()
    answer = await sidecar.call("GET", b"/_auth", headers)
    assert answer.status == 403
    assert sidecar.counted_since(before)[("rejections", "(none)", "forward_auth_spoofed", "enforce")] == 1


@module_loop
async def test_the_log_names_the_client_the_trusted_ingress_forwarded_for(build: Build) -> None:
    sidecar = await build()
    forwarded = [(b"x-forwarded-for", b"203.0.113.9")]
    await sidecar.ask("nginx", "GET", "/public/x", forwarded, client="10.1.2.3")  # the ingress: trusted
    await sidecar.ask("nginx", "GET", "/public/x", forwarded, client="192.0.2.7")  # not a trusted proxy
    preflight = [(b"origin", APP_ORIGIN.encode()), (b"access-control-request-method", b"POST"), *forwarded]
    await sidecar.ask("nginx", "OPTIONS", "/flows/browser", preflight, client="10.1.2.3")
    assert [line["client_ip"] for line in sidecar.lines] == ["203.0.113.9", "192.0.2.7", "203.0.113.9"]


@pytest.mark.parametrize("path", ["/_auth", "/_auth/", "/AUTHX", "/AUTHX/"])
@module_loop
async def test_only_the_configured_path_and_below_is_forward_auth(path: str, build: Build) -> None:
    """`--forward-auth-path /_auth` (a trailing slash or not, any letters) owns /_auth and /_auth/...; /_authx is a
    request to proxy like any other (here: no route, 404)."""
    sidecar = await build(path=path)
    base = path.rstrip("/").encode()
    nginx = [(b"x-original-uri", b"/public/x"), (b"x-original-method", b"GET")]
    assert (await sidecar.call("GET", base, nginx)).status == 200
    assert (await sidecar.call("GET", base + b"/sub", nginx)).status == 200
    other = await sidecar.call("GET", base + b"x", nginx)
    assert (other.status, other.problem()["reason"]) == (404, "no_route")


@module_loop
async def test_without_forward_auth_the_path_is_an_ordinary_one(build: Build) -> None:
    sidecar = await build(ingress=None, path=None)
    answer = await sidecar.call("GET", b"/_auth", [(b"x-original-uri", b"/public/x"), (b"x-original-method", b"GET")])
    assert (answer.status, answer.problem()["reason"]) == (404, "no_route")
