"""Slow uploads, against a real sidecar process, a recording upstream and raw sockets: a body trickled just fast
enough to beat body_timeout is cut once it averages less than `limits.min_body_rate` after the grace period (408
`body_timeout`, counted, logged, the upstream request aborted) and the route's share of the upstream pool is given
back; an upload at a fine rate that lasts longer than the grace period is never cut."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.limited import Limited, limited_sidecar
from tests.support.metrics import rejections
from tests.support.rawsock import connect, head, read_reply, send_raw

POLICY = Path(__file__).with_name("slow_upload.yaml")  # min_body_rate 1 KiB/s after 1 s; one connection per route


@pytest.fixture(scope="module")
def slow(sidecar_env: dict[str, str]) -> Iterator[Limited]:
    with limited_sidecar(sidecar_env, POLICY) as servers:
        yield servers


@pytest.fixture()
def admin(slow: Limited) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=slow.sidecar.admin, timeout=30, trust_env=False) as http:
        yield http


def _send_paced(sock: socket.socket, piece: bytes, count: int, interval: float, stop: threading.Event) -> None:
    """A client sending `count` pieces `interval` seconds apart (the pace is the test's subject, not a sync point)
    until it is told to stop or the sidecar closes the connection."""
    for _ in range(count):
        if stop.wait(interval):
            return
        try:
            sock.sendall(piece)
        except OSError:
            return


def test_a_trickled_body_is_cut_and_the_routes_pool_share_given_back(slow: Limited, admin: httpx.Client) -> None:
    """The attack found: one byte per piece, each well inside body_timeout, on a body of 100000 bytes. It averages
    10 bytes/s, far below 1 KiB/s: after the 1 s grace it is refused like a stalled body and its upstream connection
    dropped, so the route's next caller gets the route's only connection."""
    before = rejections(admin, "upload", "body_timeout")
    stop = threading.Event()
    with connect(slow.sidecar.proxy) as sock:
        sock.sendall(head("POST", "/upload/trickled", [("Content-Length", "100000")]) + b"x")
        trickle = threading.Thread(target=_send_paced, args=(sock, b"x", 1000, 0.1, stop), daemon=True)
        trickle.start()
        try:
            reply = read_reply(sock, timeout=8)  # the trickle would last 100 s: only the minimum rate ends it
        finally:
            stop.set()
            trickle.join(5)
    problem = reply.json()
    assert (reply.status, problem["reason"]) == (408, "body_timeout")
    assert reply.headers["content-type"] == "application/problem+json"
    seen = slow.recorder.wait(lambda seen: any(s.path == "/upload/trickled" and s.outcome != "receiving" for s in seen))
    (upstream,) = [s for s in seen if s.path == "/upload/trickled"]
    assert (upstream.outcome, upstream.answered) == ("aborted", False)
    assert upstream.body_bytes < 1000
    assert rejections(admin, "upload", "body_timeout") == before + 1
    slow.sidecar.wait_for_log(
        "request", 10, request_id=problem["request_id"], reason="body_timeout", status=408, decision="reject"
    )
    # The route's one connection is free again: its next caller is answered, not 503 pool_share_full.
    after = send_raw(slow.sidecar.proxy, head("GET", "/upload/after", [("Connection", "close")]))
    assert after.status == 200, after.body
    assert after.json()["path"] == "/upload/after"


def test_an_upload_at_a_fine_rate_is_never_cut(slow: Limited, admin: httpx.Client) -> None:
    """2 KiB every 50 ms (about 40 KiB/s) for 3 s, three times the grace period: the whole body arrives."""
    before = rejections(admin, "upload", "body_timeout")
    piece, count = b"y" * 2048, 60
    with connect(slow.sidecar.proxy) as sock:
        sock.sendall(head("POST", "/upload/steady", [("Content-Length", str(len(piece) * count))]))
        _send_paced(sock, piece, count, 0.05, threading.Event())
        reply = read_reply(sock)
    assert reply.status == 200, reply.body
    assert (reply.json()["path"], reply.json()["body_bytes"]) == ("/upload/steady", len(piece) * count)
    assert rejections(admin, "upload", "body_timeout") == before
