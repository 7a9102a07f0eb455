"""One Exchange per request, in process: each way a request ends gives its answer, its metrics and its one access
line, through the gate, forward-auth and the CORS preflight as the listener calls them (ASGI), with a real upstream
on 127.0.0.1. A step of the sequence (count, refuse, rate limit, finish) dropped or doubled fails a row here."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from sidecar.edge.decide import Decision
from sidecar.edge.exchange import Exchange, Record, Verdict
from sidecar.edge.forward_auth import ForwardAuth
from sidecar.edge.gate import Gate
from sidecar.edge.runtime import Runtime
from sidecar.observe import log
from sidecar.observe.metrics import Metrics
from sidecar.policy.load import parse_policy
from sidecar.policy.model import Identity, Mode
from sidecar.reasons import Reason
from tests.support.servers import ThreadServer, free_closed_port

ORIGIN = "https://app.example"


def _policy(upstream: str, dead: str) -> str:
    return f"""version: 1
providers:
  contoso: {{ issuer: "http://127.0.0.1:{dead}/tenant/v2.0", audiences: [api://x] }}
routes:
  - {{ name: open, match: {{ path: /open }}, upstream: "{upstream}/open", allow: anyone }}
  - name: locked
    match: {{ path: /locked, methods: [GET] }}
    upstream: "{upstream}/locked"
    allow: [{{ provider: contoso }}]
  - {{ name: watched, match: {{ path: /watched }}, upstream: "{upstream}/w", allow: [{{ provider: contoso }}],
       mode: audit }}
  - {{ name: limited, match: {{ path: /limited }}, upstream: "{upstream}/l", allow: anyone,
       rate_limit: {{ per: ip, requests: 1, window: 1m }} }}
  - {{ name: small, match: {{ path: /small }}, upstream: "{upstream}/s", allow: anyone, max_body: 10 }}
  - {{ name: dead, match: {{ path: /dead }}, upstream: "http://127.0.0.1:{dead}/dead", allow: anyone }}
  - {{ name: page, match: {{ path: /page }}, upstream: "{upstream}/p", allow: anyone,
       cors: {{ origins: ["{ORIGIN}"] }} }}
  - {{ name: dead-audit, match: {{ path: /dead-audit }}, upstream: "http://127.0.0.1:{dead}/d", allow: anyone,
       mode: audit, rate_limit: {{ per: ip, requests: 1, window: 1m }} }}
  - {{ name: silent, match: {{ path: /silent }}, upstream: "{upstream}/slow/30", allow: anyone, timeout: 200ms }}
"""


@dataclass
class Sent:
    """What the client got: the ASGI messages the gate sent."""

    messages: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        assert len(starts) <= 1
        return starts[0]["status"] if starts else None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return next(m["headers"] for m in self.messages if m["type"] == "http.response.start")

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")


@dataclass(frozen=True)
class Ask:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    gone: bool = False  # the client disconnects instead of sending its body
    before: int = 0  # the same request sent this many times first (a rate limit's budget spent)


def _scope(ask: Ask) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": ask.method,
        "scheme": "http",
        "path": ask.path,
        "raw_path": ask.path.encode("ascii"),
        "query_string": b"",
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in ask.headers],
        "client": ("203.0.113.7", 50000),
        "server": ("127.0.0.1", 8080),
    }


def _receive(ask: Ask) -> Callable[[], Any]:
    pending = [{"type": "http.disconnect"}] if ask.gone else [{"type": "http.request", "body": ask.body}]

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    return receive


@pytest.fixture
def access_lines(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    """The JSON access lines, as written to stdout (read after each request: they are batched)."""
    written = io.StringIO()
    log.flush()
    monkeypatch.setattr(log._lines, "stream", written)
    monkeypatch.setattr(log._lines, "direct", True)  # what `log.configure(log_format="json")` sets
    caplog.set_level(logging.INFO, logger="sidecar.access")

    def lines() -> list[str]:
        log.flush()
        return written.getvalue().splitlines()

    return lines


@pytest.fixture
async def runtime(upstream: ThreadServer) -> AsyncIterator[Runtime]:
    policy = parse_policy(_policy(upstream.url, str(free_closed_port())), "policy.yaml", {})
    runtime = Runtime.create(policy, "hash", Metrics(CollectorRegistry()))
    yield runtime
    await runtime.close()


def _gate(runtime: Runtime) -> Gate:
    return Gate(runtime, ForwardAuth(runtime, "/auth", "nginx"))


def _preflight(origin: str) -> tuple[tuple[str, str], ...]:
    return (("Origin", origin), ("Access-Control-Request-Method", "GET"))


def _asked(path: str, method: str = "GET") -> tuple[tuple[str, str], ...]:
    return (("X-Original-URI", path), ("X-Original-Method", method))


# Each way a request ends: the request -> the status, headers the answer must hold, the access line's fields
# (besides request_id, method, client_ip and the timings, checked for every row), and the metrics counted.
_LINE = {"mode": "enforce"}
ROWS: dict[str, tuple[Ask, int | None, dict[str, str], dict[str, Any], dict[str, dict[str, str]]]] = {
    "allowed-is-forwarded": (
        Ask("GET", "/open"),
        200,
        {},
        {**_LINE, "path": "/open", "route": "open", "decision": "allow", "status": 200, "bytes_in": 0},
        {},
    ),
    "refused-by-the-policy": (
        Ask("GET", "/locked"),
        401,
        {"www-authenticate": 'Bearer realm="sidecar"', "content-type": "application/problem+json"},
        {**_LINE, "path": "/locked", "route": "locked", "reason": "missing_token", "decision": "reject", "status": 401},
        {"sidecar_rejections_total": {"route": "locked", "reason": "missing_token", "mode": "enforce"}},
    ),
    "wrong-method-says-allow": (
        Ask("POST", "/locked"),
        405,
        {"allow": "GET"},
        {
            **_LINE,
            "path": "/locked",
            "route": None,
            "reason": "method_not_allowed",
            "decision": "reject",
            "status": 405,
        },
        {"sidecar_rejections_total": {"route": "(none)", "reason": "method_not_allowed", "mode": "enforce"}},
    ),
    "conflicting-head": (
        Ask("POST", "/open", (("Content-Length", "1"), ("Transfer-Encoding", "chunked"))),
        400,
        {},
        {**_LINE, "path": None, "route": None, "reason": "conflicting_headers", "decision": "reject", "status": 400},
        {"sidecar_rejections_total": {"route": "(none)", "reason": "conflicting_headers", "mode": "enforce"}},
    ),
    "audit-forwards-a-would-be-refusal": (
        Ask("GET", "/watched"),
        200,
        {},
        {
            "mode": "audit",
            "path": "/watched",
            "route": "watched",
            "reason": "missing_token",
            "decision": "audit_forward",
            "status": 200,
            "bytes_in": 0,
        },
        {"sidecar_rejections_total": {"route": "watched", "reason": "missing_token", "mode": "audit"}},
    ),
    "over-the-rate-limit": (
        Ask("GET", "/limited", before=1),
        429,
        {"retry-after": "60"},
        {
            **_LINE,
            "path": "/limited",
            "route": "limited",
            "reason": "rate_limited",
            "retry_after": 60,
            "decision": "reject",
            "status": 429,
        },
        {"sidecar_rejections_total": {"route": "limited", "reason": "rate_limited", "mode": "enforce"}},
    ),
    "a-limit-of-the-route": (
        Ask("POST", "/small", (("Content-Length", "20"),), b"x" * 20),
        413,
        {"connection": "close"},
        {**_LINE, "path": "/small", "route": "small", "reason": "body_too_large", "decision": "reject", "status": 413},
        {"sidecar_rejections_total": {"route": "small", "reason": "body_too_large", "mode": "enforce"}},
    ),
    "upstream-unreachable": (
        Ask("GET", "/dead"),
        502,
        {"content-type": "application/problem+json"},
        {
            **_LINE,
            "path": "/dead",
            "route": "dead",
            "reason": "upstream_unreachable",
            "decision": "upstream_error",
            "status": 502,
            "upstream_error": "ConnectionRefusedError",  # why, for the operator only,
        },
        {"sidecar_upstream_errors_total": {"route": "dead", "error": "upstream_unreachable"}},
    ),
    "client-gone-mid-body": (
        Ask("POST", "/open", (("Content-Length", "5"),), gone=True),
        None,
        {},
        {**_LINE, "path": "/open", "route": "open", "decision": "client_gone", "status": 499},
        {},
    ),
    "preflight-allowed": (
        Ask("OPTIONS", "/page", _preflight(ORIGIN)),
        204,
        {"access-control-allow-origin": ORIGIN},
        {**_LINE, "path": "/page", "route": "page", "cors": "allowed", "decision": "preflight", "status": 204},
        {},
    ),
    "preflight-refused": (
        Ask("OPTIONS", "/page", _preflight("https://evil.example")),
        403,
        {"vary": "Origin"},
        {
            **_LINE,
            "path": "/page",
            "route": "page",
            "reason": "cors_refused",
            "cors": "origin",
            "decision": "reject",
            "status": 403,
        },
        {"sidecar_rejections_total": {"route": "page", "reason": "cors_refused", "mode": "enforce"}},
    ),
    "forward-auth-allows": (
        Ask("GET", "/auth", _asked("/open")),
        200,
        {"content-length": "0"},
        {**_LINE, "path": "/open", "route": "open", "forward_auth": True, "decision": "allow", "status": 200},
        {},
    ),
    "forward-auth-refuses": (
        Ask("GET", "/auth", _asked("/locked")),
        401,
        {"www-authenticate": 'Bearer realm="sidecar"'},
        {
            **_LINE,
            "path": "/locked",
            "route": "locked",
            "reason": "missing_token",
            "forward_auth": True,
            "decision": "reject",
            "status": 401,
        },
        {"sidecar_rejections_total": {"route": "locked", "reason": "missing_token", "mode": "enforce"}},
    ),
    "forward-auth-speaks-only-401-and-403": (
        Ask("GET", "/auth", _asked("/nowhere")),
        403,
        {"content-type": "application/problem+json"},
        {
            **_LINE,
            "path": "/nowhere",
            "route": None,
            "reason": "no_route",
            "forward_auth": True,
            "decision": "reject",
            "status": 403,
        },
        {"sidecar_rejections_total": {"route": "(none)", "reason": "no_route", "mode": "enforce"}},
    ),
    "forward-auth-over-the-rate-limit": (
        Ask("GET", "/auth", _asked("/limited"), before=1),
        403,
        {"retry-after": "60"},
        {
            **_LINE,
            "path": "/limited",
            "route": "limited",
            "reason": "rate_limited",
            "retry_after": 60,
            "forward_auth": True,
            "decision": "reject",
            "status": 403,
        },
        {"sidecar_rejections_total": {"route": "limited", "reason": "rate_limited", "mode": "enforce"}},
    ),
    "forward-auth-preflight": (
        Ask("OPTIONS", "/auth", (*_preflight(ORIGIN), *_asked("/page", "OPTIONS"))),
        200,
        {"content-length": "0"},
        {
            **_LINE,
            "path": "/page",
            "route": "page",
            "cors": "allowed",
            "forward_auth": True,
            "decision": "preflight",
            "status": 200,
        },
        {},
    ),
}
_TIMINGS = {"duration_ms", "upstream_ms", "auth_ms", "bytes_out"}  # the rest is checked whole


def _sample(runtime: Runtime, name: str, labels: dict[str, str]) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(("ask", "status", "headers", "line", "counted"), ROWS.values(), ids=ROWS.keys())
async def test_each_ending_gives_its_answer_metrics_and_one_access_line(
    runtime: Runtime,
    access_lines: Callable[[], list[str]],
    ask: Ask,
    status: int | None,
    headers: dict[str, str],
    line: dict[str, Any],
    counted: dict[str, dict[str, str]],
) -> None:
    gate = _gate(runtime)
    for _ in range(ask.before):
        await gate(_scope(ask), _receive(ask), Sent())
    spent = len(access_lines())
    sent = Sent()
    ask_with_id = Ask(ask.method, ask.path, (*ask.headers, ("X-Request-Id", "ex-1")), ask.body, ask.gone)
    await gate(_scope(ask_with_id), _receive(ask_with_id), sent)

    assert sent.status == status
    if status is not None:
        for name, value in headers.items():
            assert (name.encode(), value.encode()) in sent.headers, (name, sent.headers)
        assert (b"x-request-id", b"ex-1") in sent.headers
    if status is not None and status >= 400:
        problem = json.loads(sent.body)
        assert (problem["status"], problem["reason"], problem["request_id"]) == (status, line["reason"], "ex-1")
    lines = access_lines()[spent:]
    assert len(lines) == 1  # one line per request, whatever the ending
    record = json.loads(lines[0])
    assert (record["message"], record["logger"], record["request_id"]) == ("request", "sidecar.access", "ex-1")
    assert (record["method"], record["client_ip"]) == (ask.method, "203.0.113.7")
    written = {k: v for k, v in record.items() if k not in {"time", "level", "logger", "pid", "message"}}
    assert record["duration_ms"] >= 0
    if "bytes_in" in line:
        assert record["upstream_ms"] >= 0 and record["bytes_out"] > 0
    assert {k: v for k, v in written.items() if k not in _TIMINGS | {"request_id", "method", "client_ip"}} == line
    for name, labels in counted.items():
        assert _sample(runtime, name, labels) == 1.0, (name, labels)
    rejections = sum(
        sample.value
        for metric in runtime.metrics.registry.collect()
        if metric.name == "sidecar_rejections"
        for sample in metric.samples
        if sample.name == "sidecar_rejections_total"
    )
    assert rejections == (1 if "sidecar_rejections_total" in counted else 0)  # counted once, or not at all
    route = line["route"] or "(none)"
    code = str(status if status is not None else 499)
    method = "OTHER" if ask.method not in {"GET", "POST", "OPTIONS"} else ask.method
    assert _sample(runtime, "sidecar_requests_total", {"route": route, "method": method, "code": code}) == 1.0


def test_the_access_line_keeps_the_readmes_field_order() -> None:
    """The typed record writes the fields operators read in the order docs/operations.md shows them."""
    identity = Identity("contoso", {"oid": "aaaa", "azp": "app-1"}, 0.0)
    record = Record("c15f", "POST", "/flows/payroll", "payroll", Mode.ENFORCE, "10.1.2.3", "contoso", "aaaa", "app-1")
    record.auth_ms, record.decision, record.status = 0.021, Verdict.ALLOW, 200
    record.bytes_in, record.bytes_out, record.upstream_ms, record.duration_ms = 14, 2, 41.2, 41.9
    assert identity.subject == record.subject
    written = json.JSONEncoder(separators=(",", ":")).encode(record.fields())
    assert written == (
        '{"request_id":"c15f","method":"POST","path":"/flows/payroll","route":"payroll","mode":"enforce",'
        '"client_ip":"10.1.2.3","provider":"contoso","subject":"aaaa","app":"app-1","auth_ms":0.021,'
        '"decision":"allow","status":200,"bytes_in":14,"bytes_out":2,"upstream_ms":41.2,"duration_ms":41.9}'
    )


def test_a_refused_line_has_nulls_for_what_is_unknown_and_no_caller() -> None:
    record = Record("r", None, None, None, Mode.ENFORCE, None, reason=Reason.BAD_REQUEST)
    record.decision, record.status = Verdict.REJECT, 400
    assert record.fields() == {
        "request_id": "r",
        "method": None,
        "path": None,
        "route": None,
        "mode": "enforce",
        "client_ip": None,
        "reason": "bad_request",
        "decision": "reject",
        "status": 400,
    }


async def test_the_verified_caller_is_logged_and_a_missing_app_is_null(runtime: Runtime) -> None:
    decision = Decision("/open", runtime.current.policy.routes[0], identity=Identity("contoso", {"sub": "s"}, 0.0))
    scope = _scope(Ask("GET", "/open"))
    exchange = Exchange.begin(runtime, runtime.current, scope, "r", "GET", decision, 0.0, None)
    fields = exchange.record.fields()
    assert (fields["provider"], fields["subject"], fields["app"]) == ("contoso", "s", None)
    assert "auth_ms" not in fields  # no verification measured: no field


async def test_a_502_carries_no_retry_after_of_an_audit_mode_rate_limit(
    runtime: Runtime, access_lines: Callable[[], list[str]]
) -> None:
    """Over an audit-mode route's budget the request is still forwarded; when the upstream then fails, the 502 says
    nothing of the would-be refusal's wait (the client could not do better by waiting)."""
    gate, ask = _gate(runtime), Ask("GET", "/dead-audit")
    for _ in range(2):
        sent = Sent()
        await gate(_scope(ask), _receive(ask), sent)
        assert sent.status == 502
        assert [name for name, _ in sent.headers if name == b"retry-after"] == []
    record = json.loads(access_lines()[-1])
    assert (record["decision"], record["reason"], record["mode"]) == ("upstream_error", "upstream_unreachable", "audit")
    assert record["retry_after"] == 60  # the log still says what the enforced limit would have answered
    labels = {"route": "dead-audit", "reason": "rate_limited", "mode": "audit"}
    assert _sample(runtime, "sidecar_rejections_total", labels) == 1.0
    labels = {"route": "dead-audit", "error": "upstream_unreachable"}
    assert _sample(runtime, "sidecar_upstream_errors_total", labels) == 2.0


async def test_a_timed_out_upstream_is_a_504_without_an_empty_upstream_error(
    runtime: Runtime, access_lines: Callable[[], list[str]]
) -> None:
    """`upstream_error` says why the upstream failed when the client knows (a refused connection, a TLS error);
    a silence has nothing more to say than its reason, and the line has no empty field."""
    sent, ask = Sent(), Ask("GET", "/silent")
    await _gate(runtime)(_scope(ask), _receive(ask), sent)
    assert sent.status == 504
    record = json.loads(access_lines()[-1])
    assert (record["decision"], record["reason"], record["status"]) == ("upstream_error", "upstream_timeout", 504)
    assert "upstream_error" not in record
    labels = {"route": "silent", "error": "upstream_timeout"}
    assert _sample(runtime, "sidecar_upstream_errors_total", labels) == 1.0
