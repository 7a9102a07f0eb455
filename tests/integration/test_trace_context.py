"""Traces across the hop: W3C `traceparent` and `tracestate` reach the upstream exactly as the client sent them
(every line, in order, valid or not: the sidecar takes no part in the trace), and the access line carries the trace
id of a valid `traceparent`, for proxied, refused and forward-auth requests alike. A raw-socket upstream records
the header lines it received; a client writes raw bytes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.rawsock import head, send_raw
from tests.support.rawupstream import RawUpstream, Received
from tests.support.servers import SidecarProcess

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID = f"00-{TRACE}-00f067aa0ba902b7-01"
STATES = ["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7,vendor@tenant=a-b"]
POLICY = """\
version: 1
routes:
  - name: traced
    match: { path: /traced }
    upstream: ${RAW}/traced
    allow: anyone
"""
TRACE_HEADERS = (b"traceparent", b"tracestate")


@dataclass
class Hop:
    upstream: RawUpstream
    sidecar: SidecarProcess


def _ok(_request: Received) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture(scope="module")
def hop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hop]:
    policy = tmp_path_factory.mktemp("trace") / "policy.yaml"
    policy.write_text(POLICY)
    upstream = RawUpstream()
    upstream.answers["/traced"] = _ok
    args = ("--drain-delay", "0", "--forward-auth-path", "/_auth", "--forward-auth-ingress", "nginx")
    sidecar = SidecarProcess(policy, {"RAW": upstream.url}, args)
    try:
        sidecar.start()
        yield Hop(upstream, sidecar)
        assert sidecar.stop() == 0
    finally:
        if sidecar._process is not None and sidecar._process.poll() is None:
            sidecar.stop()
        upstream.stop()


def _received(hop: Hop, rid: str) -> Received:
    """The request the upstream received with this X-Request-Id (the sidecar keeps a well-formed one)."""
    matching = [r for r in hop.upstream.at("/traced") if (b"x-request-id", rid.encode()) in r.headers]
    assert len(matching) == 1, matching
    return matching[0]


def _trace_lines(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name in TRACE_HEADERS]


def test_traceparent_and_every_tracestate_line_reach_the_upstream_unchanged(hop: Hop) -> None:
    sent = [("traceparent", VALID), ("tracestate", STATES[0]), ("X-Other", "1"), ("tracestate", STATES[1])]
    reply = send_raw(hop.sidecar.proxy, head("GET", "/traced", [*sent, ("X-Request-Id", "trace-ok-1")]))
    assert reply.status == 200
    expected = [(name.encode(), value.encode()) for name, value in sent if name != "X-Other"]
    assert _trace_lines(_received(hop, "trace-ok-1").headers) == expected


def test_the_access_line_carries_the_trace_id(hop: Hop) -> None:
    sent = [("traceparent", VALID), ("X-Request-Id", "trace-log-1")]
    reply = send_raw(hop.sidecar.proxy, head("GET", "/traced", sent))
    assert reply.status == 200
    line = hop.sidecar.wait_for_log("request", request_id="trace-log-1")
    assert line["trace_id"] == TRACE and line["status"] == 200


def test_a_refused_request_is_logged_with_its_trace_id_too(hop: Hop) -> None:
    sent = [("traceparent", VALID), ("X-Request-Id", "trace-404")]
    reply = send_raw(hop.sidecar.proxy, head("GET", "/nowhere", sent))
    assert reply.status == 404
    line = hop.sidecar.wait_for_log("request", request_id="trace-404")
    assert line["trace_id"] == TRACE and line["reason"] == "no_route"


def test_a_forward_auth_answer_is_logged_with_the_trace_id_the_ingress_passed(hop: Hop) -> None:
    asked = [("X-Original-URI", "/traced"), ("X-Original-Method", "GET"), ("traceparent", VALID)]
    reply = send_raw(hop.sidecar.proxy, head("GET", "/_auth", [*asked, ("X-Request-Id", "trace-fa-1")]))
    assert reply.status == 200
    # The answer names no trace header: an ingress that copies answer headers upstream keeps the caller's trace.
    assert reply.values("traceparent") == reply.values("tracestate") == []
    line = hop.sidecar.wait_for_log("request", request_id="trace-fa-1")
    assert line["forward_auth"] is True and line["trace_id"] == TRACE


INVALID = {
    "uppercase": [f"00-{TRACE.upper()}-00f067aa0ba902b7-01"],
    "zero-trace-id": [f"00-{'0' * 32}-00f067aa0ba902b7-01"],
    "version-ff": [f"ff-{TRACE}-00f067aa0ba902b7-01"],
    "oversized": [VALID + "-" + "z" * 3000],
    "not-a-traceparent": ["hello=world; x"],
    "two-lines": [VALID, f"00-{'1' * 32}-00f067aa0ba902b7-01"],
}


@pytest.mark.parametrize("values", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_traceparent_is_forwarded_unchanged_and_never_logged(
    hop: Hop, values: list[str], request: pytest.FixtureRequest
) -> None:
    rid = "trace-bad-" + request.node.callspec.id
    sent = [*(("traceparent", value) for value in values), ("tracestate", STATES[0])]
    reply = send_raw(hop.sidecar.proxy, head("GET", "/traced", [*sent, ("X-Request-Id", rid)]))
    assert reply.status == 200
    expected = [(name.encode(), value.encode()) for name, value in sent]
    assert _trace_lines(_received(hop, rid).headers) == expected
    line = hop.sidecar.wait_for_log("request", request_id=rid)
    assert "trace_id" not in line
    logged = "\n".join(hop.sidecar.lines)
    assert not any(value in logged for value in values)


def test_without_traceparent_the_line_has_no_trace_id_and_the_upstream_gets_none(hop: Hop) -> None:
    reply = send_raw(hop.sidecar.proxy, head("GET", "/traced", [("X-Request-Id", "trace-none")]))
    assert reply.status == 200
    assert _trace_lines(_received(hop, "trace-none").headers) == []
    assert "trace_id" not in hop.sidecar.wait_for_log("request", request_id="trace-none")
