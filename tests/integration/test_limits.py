"""Limits, against a real sidecar process with raw sockets: body size (declared and chunked), slow heads and stalled
bodies, header count and size, and load shedding past a route's max_concurrent. Each refusal is counted and logged,
and never reaches the upstream (or, for a body already under way, reaches it as an aborted request)."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support.limited import Limited
from tests.support.metrics import rejections
from tests.support.rawsock import Reply, closed, connect, head, read_reply, send_raw

NONE = "(none)"  # the route label of a refusal made before any route is known


@pytest.fixture()
def admin(limited: Limited) -> Iterator[httpx.Client]:  # the limits sidecar's (tests/integration/conftest.py)
    with httpx.Client(base_url=limited.sidecar.admin, timeout=30, trust_env=False) as http:
        yield http


def _refused(limited: Limited, admin: httpx.Client, before: float, route: str, reply: Reply) -> None:
    """A problem+json refusal, counted once and logged with its request id, reason and status."""
    problem = reply.json()
    assert reply.headers["content-type"] == "application/problem+json"
    assert rejections(admin, route, problem["reason"]) == before + 1
    rid, reason = problem["request_id"], problem["reason"]
    limited.sidecar.wait_for_log("request", 10, request_id=rid, reason=reason, status=reply.status, decision="reject")


@pytest.mark.parametrize(("size", "status"), [(1024, 200), (1025, 413)], ids=["at-max-body", "over-max-body"])
def test_a_declared_body_over_max_body_is_413_before_the_upstream(
    size: int, status: int, limited: Limited, admin: httpx.Client
) -> None:
    path = f"/small/declared-{size}"
    before = rejections(admin, "small", "body_too_large")
    with connect(limited.url) as sock:
        sock.sendall(head("POST", path, [("Content-Length", str(size))]))
        if status == 200:
            sock.sendall(b"x" * size)
        reply = read_reply(sock)
        assert reply.status == status
        if status == 413:
            assert reply.json()["reason"] == "body_too_large"
            assert reply.headers["connection"] == "close" and closed(sock)
            _refused(limited, admin, before, "small", reply)
    assert [seen.body_bytes for seen in limited.recorder.at(path)] == ([1024] if status == 200 else [])


@pytest.mark.parametrize(
    ("query", "status"), [("a=1&b=2;c=3", 200), ("a=1&b=2&c=%26d", 414)], ids=["at-max-query-params", "over-it"]
)
def test_a_query_over_max_query_params_is_414_before_the_upstream(
    query: str, status: int, limited: Limited, admin: httpx.Client
) -> None:
    path = f"/small/query-{status}"
    before = rejections(admin, "small", "too_many_query_params")
    reply = send_raw(limited.url, head("GET", f"{path}?{query}", []))
    assert reply.status == status
    if status == 414:
        assert reply.json()["reason"] == "too_many_query_params"
        _refused(limited, admin, before, "small", reply)
        assert limited.recorder.at(path) == []
    else:
        assert len(limited.recorder.at(path)) == 1
        assert rejections(admin, "small", "too_many_query_params") == before


def _chunked(size: int) -> bytes:
    return b"%x\r\n" % size + b"c" * size + b"\r\n"


def test_a_chunked_body_within_max_body_streams_through(limited: Limited) -> None:
    data = head("POST", "/small/chunked-ok", [("Transfer-Encoding", "chunked")]) + _chunked(600) + _chunked(424)
    reply = send_raw(limited.url, data + b"0\r\n\r\n")
    assert (reply.status, reply.json()["body_bytes"]) == (200, 1024)


def test_a_chunked_body_over_max_body_is_413_and_the_upstream_request_aborted(
    limited: Limited, admin: httpx.Client
) -> None:
    before = rejections(admin, "small", "body_too_large")
    with connect(limited.url) as sock:
        sock.sendall(head("POST", "/small/chunked", [("Transfer-Encoding", "chunked")]) + _chunked(600))
        limited.recorder.wait(lambda seen: any(s.path == "/small/chunked" and s.body_bytes == 600 for s in seen))
        sock.sendall(_chunked(600))  # 1200 bytes: over the route's 1 KiB
        reply = read_reply(sock)
        assert (reply.status, reply.json()["reason"]) == (413, "body_too_large")
        assert closed(sock)
    aborted = limited.recorder.wait(
        lambda seen: any(s.path == "/small/chunked" and s.outcome != "receiving" for s in seen)
    )
    (upstream,) = [seen for seen in aborted if seen.path == "/small/chunked"]
    assert upstream.outcome == "aborted" and upstream.body_bytes <= 1024 and not upstream.answered
    _refused(limited, admin, before, "small", reply)


def test_a_stalled_body_is_408_and_the_upstream_request_aborted(limited: Limited, admin: httpx.Client) -> None:
    before = rejections(admin, "small", "body_timeout")
    with connect(limited.url) as sock:
        sock.sendall(head("POST", "/small/stalled", [("Content-Length", "100")]) + b"x" * 10)
        reply = read_reply(sock)  # the policy's body_timeout is 3s; nothing more is sent
        assert (reply.status, reply.json()["reason"]) == (408, "body_timeout")
        assert closed(sock)
    seen = limited.recorder.wait(
        lambda seen: any(s.path == "/small/stalled" and s.outcome != "receiving" for s in seen)
    )
    assert [(s.outcome, s.body_bytes) for s in seen if s.path == "/small/stalled"] == [("aborted", 10)]
    _refused(limited, admin, before, "small", reply)


@pytest.mark.parametrize("earlier", [0, 1], ids=["first-request", "after-a-keep-alive-request"])
def test_a_head_that_does_not_arrive_in_time_is_408(earlier: int, limited: Limited, admin: httpx.Client) -> None:
    before = rejections(admin, NONE, "header_timeout")
    with connect(limited.url) as sock:
        for _ in range(earlier):
            sock.sendall(head("GET", "/echo/first"))
            assert read_reply(sock).status == 200
        sock.sendall(b"GET /small/slowloris HTTP/1.1\r\nHost: sidecar\r\nX-Slow: a")  # and nothing more
        reply = read_reply(sock)  # the policy's header_timeout is 1s
        assert (reply.status, reply.json()["reason"]) == (408, "header_timeout")
        assert closed(sock)
    assert limited.recorder.at("/small/slowloris") == []
    _refused(limited, admin, before, NONE, reply)


def test_a_connection_that_never_sends_a_request_is_closed(limited: Limited) -> None:
    with connect(limited.url) as sock:
        sock.settimeout(10)
        assert sock.recv(1024) == b""  # closed after header_timeout, without an answer


def test_the_unread_body_of_a_refusal_cannot_hold_the_connection(limited: Limited) -> None:
    with connect(limited.url) as sock:
        sock.sendall(head("POST", "/token", [("Content-Length", "100000")]) + b"x" * 10)
        assert read_reply(sock).status == 401  # refused on the head: the body is never read
        assert closed(sock)  # the rest did not come within body_timeout


def _filler(count: int, size: int = 8) -> list[tuple[str, str]]:
    return [(f"X-Filler-{n}", "f" * size) for n in range(count)]


HEADS = {
    "24-headers": (_filler(22), 200),  # + Host + Connection: the policy's max_headers
    "25-headers": (_filler(23), 431),
    "11-KiB": ([("X-Big", "b" * 11 * 1024)], 200),
    "13-KiB-header": ([("X-Big", "b" * 13 * 1024)], 431),
    "13-KiB-in-many-headers": (_filler(13, 1024), 431),
}


@pytest.mark.parametrize(("headers", "status"), HEADS.values(), ids=HEADS.keys())
def test_heads_over_the_header_limits_are_431(
    headers: list[tuple[str, str]], status: int, limited: Limited, admin: httpx.Client
) -> None:
    before = rejections(admin, NONE, "headers_too_large")
    reply = send_raw(limited.url, head("GET", "/echo/head", [("Connection", "close"), *headers]))
    assert reply.status == status
    if status == 431:
        assert reply.json()["reason"] == "headers_too_large"
        _refused(limited, admin, before, NONE, reply)


def test_a_long_request_target_counts_toward_the_head(limited: Limited) -> None:
    reply = send_raw(limited.url, head("GET", "/small/" + "a" * 13 * 1024, [("Connection", "close")]))
    assert (reply.status, reply.json()["reason"]) == (431, "headers_too_large")


def test_an_endless_header_line_is_cut_off_early(limited: Limited) -> None:
    """A header value sent piece by piece is refused once the head passes max_header_bytes, not at its end."""
    piece, sent, answered = b"v" * 4096, 0, False
    with connect(limited.url) as sock:
        sock.sendall(b"GET /small/endless HTTP/1.1\r\nHost: sidecar\r\nX-Endless: ")
        while sent < 1024 * 1024 and not answered:
            try:
                sock.sendall(piece)
            except OSError:  # the server closed: its answer is already in our receive buffer
                break
            sent += len(piece)
            answered = bool(select.select([sock], [], [], 0)[0])
        reply = read_reply(sock)
    # Not the 408 of a head that never ends: the pieces were counted as they came.
    assert (reply.status, reply.json()["reason"]) == (431, "headers_too_large")


def test_pipelined_requests_are_answered_in_turn(limited: Limited) -> None:
    with connect(limited.url) as sock:
        sock.sendall(head("GET", "/echo/one") + head("GET", "/echo/two") + head("GET", "/echo/three"))
        assert [read_reply(sock).json()["path"] for _ in range(3)] == ["/one", "/two", "/three"]


def test_a_pipelined_head_over_the_limits_ends_the_connection_after_the_earlier_answer(limited: Limited) -> None:
    with connect(limited.url) as sock:
        sock.sendall(head("GET", "/echo/first") + head("GET", "/echo/second", _filler(30)))
        assert read_reply(sock).status == 200  # never cut short by the refusal behind it
        sock.settimeout(10)
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest == b"" or rest.startswith(b"HTTP/1.1 431 ")  # refused: answered in turn, or closed unanswered


def test_requests_past_max_concurrent_are_shed_with_503_and_retry_after(limited: Limited, admin: httpx.Client) -> None:
    before = rejections(admin, "held", "overloaded")
    held: list[socket.socket] = []
    try:
        for n in range(2):  # the route's max_concurrent
            held.append(connect(limited.url))
            held[-1].sendall(head("GET", f"/held/{n}"))
        limited.recorder.wait(lambda seen: sum(s.path.startswith("/held/") for s in seen) >= 2)
        shed = send_raw(limited.url, head("GET", "/held/2", [("Connection", "close")]))
        assert (shed.status, shed.json()["reason"], shed.headers["retry-after"]) == (503, "overloaded", "1")
        assert limited.recorder.at("/held/2") == []  # shed at once, never queued for the upstream
        _refused(limited, admin, before, "held", shed)
        limited.recorder.release()
        assert [read_reply(sock).status for sock in held] == [200, 200]
    finally:
        for sock in held:
            sock.close()
    with connect(limited.url) as sock:
        sock.sendall(head("GET", "/held/3", [("Connection", "close")]))
        limited.recorder.wait(lambda seen: any(s.path == "/held/3" for s in seen))
        limited.recorder.release()
        assert read_reply(sock).status == 200  # the slots were given back
