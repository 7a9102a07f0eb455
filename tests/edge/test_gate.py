"""The gate in-process, as an ASGI app in front of real upstreams on 127.0.0.1: the decision table, what is forwarded
(and what is not), streaming both ways, the response header rules, the route's limits and upstream failures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

import sidecar.upstream.target as target_module
from sidecar.demo.echo import stream_pattern
from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.edge.conftest import RAW_SIG, BuildEdge, Edge
from tests.support import jwtkit
from tests.support.asgi import Answer, call
from tests.support.h1upstream import Reader, Upstream, Writer, read_request, serving
from tests.support.logs import Records
from tests.support.people import AUD, LISA, TOM, bearer
from tests.support.rawupstream import RawUpstream, Received
from tests.support.recorder import Recorder
from tests.support.servers import ThreadServer

Headers = list[tuple[str, str]]


def problem(answer: Answer) -> dict[str, object]:
    assert answer.values("content-type") == [b"application/problem+json"]
    body = json.loads(answer.body)
    assert isinstance(body, dict)
    assert answer.values("x-request-id") == [str(body["request_id"]).encode()]
    return body


@dataclass(frozen=True)
class Case:
    token: Callable[[DemoIssuer], str | None]
    status: int
    reason: str | None


def _lisa(issuer: DemoIssuer, **claims: object) -> str:
    return issuer.mint(CONTOSO_TENANT, {"aud": AUD, **LISA, **claims})


CASES = {
    "allowed": Case(_lisa, 200, None),
    "missing_token": Case(lambda i: None, 401, "missing_token"),
    "malformed_token": Case(lambda i: "not-a-jwt", 401, "malformed_token"),
    "bad_signature": Case(lambda i: jwtkit.tamper_payload(_lisa(i), upn="admin@contoso.com"), 401, "bad_signature"),
    "expired": Case(lambda i: _lisa(i, exp=int(time.time()) - 3600), 401, "expired"),
    "wrong_audience": Case(lambda i: _lisa(i, aud="api://someone-else"), 401, "wrong_audience"),
    "not_allowed": Case(lambda i: _lisa(i, **TOM), 403, "not_allowed"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
async def test_the_decision_table(case: Case, edge: Edge, issuer: DemoIssuer) -> None:
    token = case.token(issuer)
    headers = [("Authorization", f"Bearer {token}")] if token is not None else []

    answer = await call(edge.app, "POST", "/flows/payroll", [*headers, ("Content-Length", "2")], [b"{}"])

    assert answer.status == case.status and answer.ended
    if case.reason is None:
        assert json.loads(answer.body)["path"] == "/workflows/payroll/invoke"  # the echo upstream answered
        assert edge.sample("sidecar_requests_total", route="payroll", method="POST", code="200") == 1
        return
    body = problem(answer)
    assert (body["status"], body["reason"], body["route"]) == (case.status, case.reason, "payroll")
    (challenge,) = answer.values("www-authenticate")
    assert challenge.startswith(b'Bearer realm="edge-realm"')
    if case.reason == "missing_token":
        assert b"error=" not in challenge  # RFC 6750 §3.1: no error code when no credentials were sent
    elif case.status == 401:
        assert b'error="invalid_token"' in challenge
    else:
        assert b'error="insufficient_scope"' in challenge
    if token:
        assert token.encode() not in answer.body + challenge
    assert edge.rejections("payroll", case.reason) == 1


async def test_no_route_is_404_and_a_wrong_method_405_with_allow(edge: Edge) -> None:
    nowhere = await call(edge.app, "GET", "/nowhere")
    assert (nowhere.status, problem(nowhere)["reason"], nowhere.values("www-authenticate")) == (404, "no_route", [])
    wrong = await call(edge.app, "GET", "/flows/payroll")
    assert (wrong.status, problem(wrong)["reason"], wrong.values("allow")) == (405, "method_not_allowed", [b"POST"])
    assert edge.rejections("(none)", "no_route") == edge.rejections("(none)", "method_not_allowed") == 1


async def test_a_path_that_does_not_normalise_is_refused(edge: Edge) -> None:
    answer = await call(edge.app, "GET", "/public/a%2Fb")
    assert (answer.status, problem(answer)["reason"]) == (400, "invalid_path")


async def test_conflicting_framing_is_refused_before_any_decision(edge: Edge) -> None:
    headers = [("Content-Length", "2"), ("Transfer-Encoding", "chunked")]
    answer = await call(edge.app, "POST", "/small/conflict", headers, [b"{}"])
    assert (answer.status, problem(answer)["reason"]) == (400, "conflicting_headers")


async def test_what_is_forwarded_and_what_is_not(edge: Edge, issuer: DemoIssuer, raw: RawUpstream) -> None:
    raw.answers["/inspect"] = lambda _r: b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    headers = [
        *bearer(issuer, LISA),
        ("X-Auth-User", "admin@contoso.com"),  # a client's copy of an identity header
        ("X-Forwarded-For", "203.0.113.9"),  # from a peer that is not a trusted proxy
        ("X-HTTP-Method-Override", "DELETE"),
        ("Connection", "X-Drop"),
        ("X-Drop", "1"),
        ("X-Request-Id", "caller-id-1"),
        ("Content-Length", "2"),
    ]

    answer = await call(edge.app, "POST", "/flows/inspect?sig=forged&SIG=x&page=2", headers, [b"{}"])

    assert (answer.status, answer.body, answer.values("x-request-id")) == (200, b"ok", [b"caller-id-1"])
    (seen,) = raw.at("/inspect")
    assert seen.query == f"sig={RAW_SIG}&page=2".encode()  # the upstream's own parameters win
    assert seen.body == b"{}"
    got = dict.fromkeys(name for name, _ in seen.headers)
    assert b"authorization" not in got and b"x-drop" not in got and b"x-http-method-override" not in got
    assert values(seen, b"x-auth-user") == [b"lisa@contoso.com"]
    assert values(seen, b"x-auth-subject") == [LISA["oid"].encode()]
    assert values(seen, b"x-forwarded-for") == [b"127.0.0.1"]
    assert values(seen, b"x-request-id") == [b"caller-id-1"]


def values(seen: Received, name: bytes) -> list[bytes]:
    return [value for key, value in seen.headers if key == name]


async def test_a_trusted_proxy_names_the_client_and_forward_token_keeps_the_token(
    edge: Edge, issuer: DemoIssuer, raw: RawUpstream
) -> None:
    raw.answers["/passthrough"] = lambda _r: b"HTTP/1.1 204 No Content\r\n\r\n"
    headers = [*bearer(issuer, TOM), ("X-Forwarded-For", "203.0.113.9")]

    answer = await call(edge.app, "POST", "/flows/passthrough", headers, client=("10.1.2.3", 4000))

    assert (answer.status, answer.body) == (204, b"")
    (seen,) = raw.at("/passthrough")
    assert values(seen, b"authorization") == [headers[0][1].encode()]
    assert values(seen, b"x-forwarded-for") == [b"203.0.113.9, 10.1.2.3"]


async def test_an_audit_route_forwards_what_it_would_refuse_and_counts_it(
    edge: Edge, issuer: DemoIssuer, access_log: Records
) -> None:
    answer = await call(edge.app, "POST", "/flows/audited", bearer(issuer, TOM))
    assert answer.status == 200 and json.loads(answer.body)["path"] == "/audited"
    assert edge.rejections("audited", "not_allowed", mode="audit") == 1
    (line,) = access_log.fields()
    assert (line["decision"], line["reason"], line["status"], line["route"]) == (
        "audit_forward",
        "not_allowed",
        200,
        "audited",
    )


async def test_audit_everywhere_forwards_a_refused_request(make_edge: BuildEdge) -> None:
    edge = await make_edge(audit=True)
    answer = await call(edge.app, "POST", "/flows/payroll")
    assert answer.status == 200
    assert edge.rejections("payroll", "missing_token", mode="audit") == 1


async def test_an_open_route_needs_no_token_and_head_gets_no_body(edge: Edge) -> None:
    got = await call(edge.app, "GET", "/public/health?x=1")
    assert got.status == 200 and json.loads(got.body)["path"] == "/static/health"
    head = await call(edge.app, "HEAD", "/public/health")
    assert head.status == 200 and head.body == b""


async def test_a_download_streams_in_pieces_unchanged(edge: Edge, issuer: DemoIssuer) -> None:
    size = 5 * 64 * 1024 + 7
    answer = await call(edge.app, "GET", f"/files/stream/chunked/{size}", bearer(issuer, LISA))
    assert answer.status == 200 and answer.ended
    assert len(answer.pieces) > 2  # relayed as it arrived, not gathered first
    assert answer.body == b"".join(stream_pattern(size))
    assert answer.values("transfer-encoding") == []  # the listener frames the answer; the upstream's is hop-by-hop


async def test_an_upload_of_unknown_length_streams_up_unchanged(edge: Edge, issuer: DemoIssuer) -> None:
    pieces = [b"a" * 70_000, b"b" * 70_000, b"c" * 5]
    headers = [*bearer(issuer, LISA), ("Transfer-Encoding", "chunked")]
    answer = await call(edge.app, "PUT", "/files/upload", headers, pieces)
    echoed = json.loads(answer.body)
    assert (answer.status, echoed["body_bytes"]) == (200, 140_005)
    assert echoed["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


async def test_response_header_rules(edge: Edge, raw: RawUpstream) -> None:
    raw.answers["/app/rules"] = lambda _r: (
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: X-Hop\r\n"
        b"X-Hop: named-by-connection\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"X-Request-Id: the-upstream-s-own\r\n"
        b"Set-Cookie: a=1\r\n"
        b"Set-Cookie: b=2\r\n"
        + f"Location: {raw.url}/app/next?sig={RAW_SIG}\r\n".encode()
        + f"X-Debug: called with {RAW_SIG}\r\n".encode()
        + b"Content-Length: 2\r\n\r\nok"
    )

    answer = await call(edge.app, "GET", "/raw/rules", [("X-Request-Id", "rid-7")])

    assert (answer.status, answer.body) == (200, b"ok")
    assert answer.values("set-cookie") == [b"a=1", b"b=2"]  # every copy, in order
    assert answer.values("location") == [b"/raw/next"]  # the public path, without the upstream's query
    assert answer.values("x-request-id") == [b"rid-7"]
    for name in ("connection", "x-hop", "keep-alive", "x-debug"):
        assert answer.values(name) == [], name
    assert RAW_SIG.encode() not in b"".join(value for _, value in answer.headers)


async def test_a_204_from_upstream_loses_its_content_length(edge: Edge, raw: RawUpstream) -> None:
    raw.answers["/app/empty"] = lambda _r: b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    answer = await call(edge.app, "GET", "/raw/empty")
    assert (answer.status, answer.values("content-length"), answer.body) == (204, [], b"")


async def test_an_unreachable_upstream_is_502_and_a_slow_one_504(edge: Edge, access_log: Records) -> None:
    dead = await call(edge.app, "GET", "/dead")
    assert (dead.status, problem(dead)["reason"]) == (502, "upstream_unreachable")
    slow = await call(edge.app, "GET", "/slow/5")
    assert (slow.status, problem(slow)["reason"]) == (504, "upstream_timeout")
    assert edge.sample("sidecar_upstream_errors_total", route="dead", error="upstream_unreachable") == 1
    assert [line["decision"] for line in access_log.fields()] == ["upstream_error", "upstream_error"]
    why = str(access_log.fields()[0]["upstream_error"])  # why, for the operator: in the log, never in the answer
    assert why and why not in dead.body.decode()


async def test_a_declared_body_over_max_body_is_413_and_never_sent(
    edge: Edge, recorder: tuple[Recorder, ThreadServer]
) -> None:
    answer = await call(edge.app, "POST", "/small/declared", [("Content-Length", "100")], [b"x" * 100])
    assert (answer.status, problem(answer)["reason"]) == (413, "body_too_large")
    assert recorder[0].at("/small/declared") == []


async def test_an_undeclared_body_over_max_body_is_413_and_aborted_upstream(
    edge: Edge, recorder: tuple[Recorder, ThreadServer]
) -> None:
    pieces = [b"x" * 10, b"y" * 10, b"z" * 10]
    answer = await call(edge.app, "POST", "/small/chunked", [("Transfer-Encoding", "chunked")], pieces)
    assert (answer.status, problem(answer)["reason"]) == (413, "body_too_large")
    seen = await asyncio.to_thread(recorder[0].wait, lambda all_: any(s.path == "/small/chunked" for s in all_))
    assert not any(s.answered for s in seen if s.path == "/small/chunked")
    assert edge.rejections("small", "body_too_large") == 1


QUERY_CAP = {"at-max-query-params": ("a=1&b=2;c=3", 200), "over-it": ("a=1&b=2&c=3&d=4", 414)}


@pytest.mark.parametrize(("query", "status"), QUERY_CAP.values(), ids=QUERY_CAP.keys())
async def test_a_query_over_max_query_params_is_414_before_any_parameter_is_read(
    query: str, status: int, edge: Edge, recorder: tuple[Recorder, ThreadServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []  # a spy on the shadowing rule: which pairs it was asked about
    rule = target_module.shadows
    monkeypatch.setattr(target_module, "shadows", lambda pair, names: read.append(pair) or rule(pair, names))
    path = f"/small/query-{status}"
    answer = await call(edge.app, "POST", f"{path}?{query}", [("Content-Length", "0")])
    assert answer.status == status
    if status == 200:
        assert read == ["a=1", "b=2;c=3"] and len(recorder[0].at(path)) == 1
    else:
        assert problem(answer)["reason"] == "too_many_query_params"
        assert answer.values("content-type") == [b"application/problem+json"]
        assert read == [] and recorder[0].at(path) == []
        assert edge.rejections("small", "too_many_query_params") == 1


async def test_past_max_concurrent_is_503_until_the_slot_is_free(
    edge: Edge, recorder: tuple[Recorder, ThreadServer], request: pytest.FixtureRequest
) -> None:
    app = recorder[0]
    path = f"/held/{request.node.name}"
    first = asyncio.ensure_future(call(edge.app, "GET", path))
    await asyncio.to_thread(app.wait, lambda seen: any(s.path == path for s in seen))

    shed = await call(edge.app, "GET", path + "-shed")
    assert (shed.status, problem(shed)["reason"]) == (503, "overloaded")

    app.release()
    assert (await first).status == 200
    again = asyncio.ensure_future(call(edge.app, "GET", path + "-again"))  # the slot was given back
    await asyncio.to_thread(app.wait, lambda seen: any(s.path == path + "-again" for s in seen))
    app.release()
    assert (await again).status == 200
    assert edge.rejections("held", "overloaded") == 1


async def test_a_rate_limit_refuses_with_retry_after_and_audit_only_counts(edge: Edge, issuer: DemoIssuer) -> None:
    token = bearer(issuer, LISA)
    assert (await call(edge.app, "POST", "/flows/limited", token)).status == 200
    refused = await call(edge.app, "POST", "/flows/limited", token)
    assert (refused.status, problem(refused)["reason"]) == (429, "rate_limited")
    (retry_after,) = refused.values("retry-after")
    assert int(retry_after) > 0
    audited = [(await call(edge.app, "POST", "/flows/limited-audit", token)).status for _ in range(2)]
    assert audited == [200, 200]
    assert edge.rejections("limited-audit", "rate_limited", mode="audit") == 1


async def test_a_client_that_leaves_mid_upload_is_logged_499(
    edge: Edge, issuer: DemoIssuer, access_log: Records
) -> None:
    gone = asyncio.Event()
    gone.set()
    headers = [*bearer(issuer, LISA), ("Transfer-Encoding", "chunked")]
    answer = await call(edge.app, "PUT", "/files/left", headers, [b"part"], disconnect=gone, body_ends=False)
    assert answer.status == 0  # nobody to answer
    (line,) = access_log.fields()
    assert (line["status"], line["decision"]) == (499, "client_gone")


async def test_an_upstream_that_breaks_mid_answer_aborts_the_response(make_edge: BuildEdge) -> None:
    async def breaks(reader: Reader, writer: Writer, upstream: Upstream) -> None:
        await read_request(reader, upstream)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 10)
        await writer.drain()

    async with serving(breaks) as upstream:
        edge = await make_edge(SCRIPTED=upstream.url)
        answer = Answer()
        # Any exception: an ASGI app that raises after the response started makes the server close the connection.
        with pytest.raises(Exception):  # noqa: B017
            await call(edge.app, "GET", "/scripted/x", into=answer)
    assert (answer.status, answer.body, answer.ended) == (200, b"x" * 10, False)
    assert edge.sample("sidecar_upstream_errors_total", route="scripted", error="broken_stream") == 1


async def test_lifespan_is_answered(edge: Edge) -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return incoming.pop(0)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    await edge.app({"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
