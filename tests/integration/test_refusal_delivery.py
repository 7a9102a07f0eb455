"""Refusals reach a client that is still sending, and a malformed chunked body is a 400 at once, against a real
sidecar process, the recording upstream and raw sockets.

A refusal closes the connection. Closed while the client's bytes sat unread (or arrived after), the kernel answered
with a reset, which failed the client's next write (and can discard the answer before it is read): a fresh-clone run
saw ConnectionResetError instead of the admin port's 408. The sidecar now ends its writing after the answer, reads
and drops what still comes for at most LINGER_SECONDS and LINGER_BYTES, then closes (sidecar/edge/linger.py).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.demo.issuer import DemoIssuer
from sidecar.edge.linger import LINGER_BYTES, LINGER_SECONDS
from tests.support.limited import Limited, limited_sidecar
from tests.support.metrics import rejections
from tests.support.people import TOM, bearer
from tests.support.rawsock import Reply, connect, head, read_reply

POLICY = Path(__file__).with_name("refusals.yaml")  # heads of 12 KiB in 1 s, /small/ max_body 1 KiB, /signed/ a token
DEADLINE = 15.0  # the longest wait for an answer of the sidecar: generous for a loaded 2-core machine
PIECE = b"v" * 512  # what the client still sends after its answer: part of its header value, or of its body


@pytest.fixture(scope="module")
def servers(sidecar_env: dict[str, str]) -> Iterator[Limited]:
    with limited_sidecar(sidecar_env, POLICY) as started:
        yield started


@pytest.fixture()
def admin(servers: Limited) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=servers.sidecar.admin, timeout=30, trust_env=False) as http:
        yield http


def _answered(sock: socket.socket) -> None:
    """Waits (bounded) until the sidecar's answer is in the socket: it has refused, and closed or ended its side."""
    readable, _, _ = select.select([sock], [], [], DEADLINE)
    assert readable, f"no answer within {DEADLINE}s"


def _listener(servers: Limited, name: str) -> str:
    return servers.sidecar.admin if name == "admin" else servers.sidecar.proxy


_BIG = [("X-Big", "v" * 20000)]  # past the proxy's head limit (12 KiB) and the admin's (8 KiB)
# (listener, what the client sends first, status, reason): each is refused while the client may still send.
STILL_SENDING = [
    pytest.param("admin", b"GET /metrics HTTP/1.1\r\nHost: a\r\nX-Slow: ", 408, "header_timeout", id="admin-408"),
    pytest.param("admin", head("GET", "/metrics", _BIG), 431, "headers_too_large", id="admin-431"),
    pytest.param("admin", b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request", id="admin-400"),
    pytest.param("proxy", b"POST /small/a HTTP/1.1\r\nHost: a\r\nX-Slow: ", 408, "header_timeout", id="proxy-408"),
    pytest.param("proxy", head("POST", "/small/b", _BIG), 431, "headers_too_large", id="proxy-431"),
    pytest.param("proxy", b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request", id="proxy-400"),
    # Refused by the gate (the declared length), answered by uvicorn with Connection: close, the body unread.
    pytest.param(
        "proxy", head("POST", "/small/c", [("Content-Length", "100000")]) + b"x" * 10, 413, "body_too_large", id="413"
    ),
]


@pytest.mark.parametrize(("listener", "first", "status", "reason"), STILL_SENDING)
def test_a_client_still_sending_after_its_refusal_reads_the_whole_answer(
    servers: Limited, listener: str, first: bytes, status: int, reason: str
) -> None:
    """The client goes on sending after the sidecar answered (and, before, closed): its writes go through, it
    reads the whole problem+json answer, then the sidecar's end of the connection (no reset)."""
    with connect(_listener(servers, listener), timeout=DEADLINE) as sock:
        sock.sendall(first)
        _answered(sock)
        for _ in range(3):
            sock.sendall(PIECE)  # was: ConnectionResetError / BrokenPipeError (the reset of a close)
        reply = read_reply(sock, timeout=DEADLINE)
        assert (reply.status, reply.json()["reason"]) == (status, reason)
        assert reply.values("content-type") == ["application/problem+json"]
        assert reply.values("connection") == ["close"]
        assert sock.recv(1) == b""  # the sidecar ended its side in order


def _refused_on_proxy(servers: Limited) -> tuple[socket.socket, Reply]:
    """A head the proxy refuses (408 after header_timeout) on a connection left open: the client may send on."""
    sock = connect(servers.sidecar.proxy, timeout=DEADLINE)
    sock.sendall(b"POST /small/d HTTP/1.1\r\nHost: sidecar\r\nX-Slow: ")
    reply = read_reply(sock, timeout=DEADLINE)
    assert reply.status == 408
    return sock, reply


def test_a_client_that_never_stops_sending_is_cut_off_after_the_lingering_time(servers: Limited) -> None:
    """A byte every 50 ms after the answer (far below LINGER_BYTES): the sidecar stops reading it and closes after
    LINGER_SECONDS, so that the client's writes fail soon after (the bound stated: LINGER_SECONDS + DEADLINE)."""
    sock, _ = _refused_on_proxy(servers)
    pace = threading.Event()  # never set: its wait paces the client (the pace is the subject, not a sync point)
    with sock:
        deadline = time.monotonic() + LINGER_SECONDS + DEADLINE
        cut = False
        while not cut and time.monotonic() < deadline:
            try:
                sock.sendall(b"v")
            except OSError:  # the reset of the close: unread bytes were left
                cut = True
            pace.wait(0.05)
    assert cut, f"still open after {LINGER_SECONDS + DEADLINE}s"


def test_a_client_that_floods_after_its_answer_is_cut_off_after_lingering_bytes(servers: Limited) -> None:
    """As fast as it can after the answer: the sidecar drops LINGER_BYTES, then closes; the client is cut off
    once what the sockets' buffers hold on top is written (a few MiB on loopback, far below the bound below)."""
    sock, _ = _refused_on_proxy(servers)
    sent, piece = 0, b"v" * 65536
    with sock:
        try:
            while sent < 64 * 2**20:
                sock.sendall(piece)
                sent += len(piece)
        except OSError:
            pass
    assert LINGER_BYTES <= sent < 64 * 2**20


# --- a malformed chunked body ---------------------------------------------------------------------------------------


def test_an_invalid_chunk_size_mid_body_is_400_at_once_and_the_upstream_request_aborted(
    servers: Limited, admin: httpx.Client, issuer: DemoIssuer
) -> None:
    """An allowed request (a valid token) whose chunked body goes upstream, then `zz` where a chunk size belongs:
    400 bad_request under the route, counted and logged, and the upstream saw its connection dropped before the
    body's end, never a request it could take for whole. (Was: nothing until body_timeout, then 408.)"""
    before = rejections(admin, "signed", "bad_request")
    request = head("POST", "/signed/mid", [*bearer(issuer, TOM), ("Transfer-Encoding", "chunked")])
    with connect(servers.sidecar.proxy, timeout=DEADLINE) as sock:
        sock.sendall(request + b"5\r\nhello\r\n")
        servers.recorder.wait(lambda seen: any(s.path.endswith("/mid") and s.body_bytes == 5 for s in seen))
        sock.sendall(b"zz\r\n")
        reply = read_reply(sock, timeout=DEADLINE)  # the 408 came after body_timeout, 20 s
    problem = reply.json()
    assert (reply.status, problem["reason"]) == (400, "bad_request")
    assert reply.values("content-type") == ["application/problem+json"]
    assert reply.values("connection") == ["close"]  # the parser is stopped: nothing more is read on it
    seen = servers.recorder.wait(lambda seen: any(s.path.endswith("/mid") and s.outcome != "receiving" for s in seen))
    (upstream,) = [s for s in seen if s.path.endswith("/mid")]
    assert (upstream.outcome, upstream.body_bytes, upstream.answered) == ("aborted", 5, False)
    assert rejections(admin, "signed", "bad_request") == before + 1
    servers.sidecar.wait_for_log(
        "request", DEADLINE, request_id=problem["request_id"], route="signed", reason="bad_request", status=400
    )


def test_an_invalid_first_chunk_size_is_400_and_the_upstream_never_asked(
    servers: Limited, admin: httpx.Client, issuer: DemoIssuer
) -> None:
    before = rejections(admin, "signed", "bad_request")
    request = head("POST", "/signed/first", [*bearer(issuer, TOM), ("Transfer-Encoding", "chunked")])
    with connect(servers.sidecar.proxy, timeout=DEADLINE) as sock:
        sock.sendall(request + b"zz\r\nhello\r\n0\r\n\r\n")
        reply = read_reply(sock, timeout=DEADLINE)
    assert (reply.status, reply.json()["reason"]) == (400, "bad_request")
    assert rejections(admin, "signed", "bad_request") == before + 1
    assert [s for s in servers.recorder.seen if s.path.endswith("/first")] == []  # answered before any upstream


def test_an_invalid_chunk_size_after_the_answer_closes_without_a_second_answer(servers: Limited) -> None:
    """Refused on its head (401: no token) while its chunked body was still coming, then `zz`: the connection ends,
    with no 400 after the 401 (a client would take it for the answer to its next request)."""
    request = head("POST", "/signed/after", [("Transfer-Encoding", "chunked")])
    with connect(servers.sidecar.proxy, timeout=DEADLINE) as sock:
        sock.sendall(request + b"5\r\nhello\r\n")
        assert read_reply(sock, timeout=DEADLINE).status == 401
        sock.sendall(b"zz\r\n")
        assert sock.recv(65536) == b""  # was: a 400 bad_request
