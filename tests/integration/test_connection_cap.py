"""The proxy listener's connection cap (--max-connections), against a real sidecar process with raw sockets: past the
cap the connection idle longest is closed and the new one served; with none idle the new one is refused 503
problem+json `too_many_connections`, counted, and logged at most once per interval; below the cap nothing changes.

Each test has a sidecar of its own (cap 4): the count of open connections is the process's, and a connection a
test closed is counted out only once the sidecar has read its end. Every wait is a bounded read on a socket."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.metrics import rejections, sample
from tests.support.rawsock import closed, connect, head, read_reply
from tests.support.servers import SidecarProcess

pytestmark = pytest.mark.integration

POLICY = Path(__file__).with_name("policy.yaml")
CAP = 4
LOG_INTERVAL = 10.0  # sidecar/edge/conncap.py: CAP_LOG_INTERVAL
DEADLINE = 10.0
NONE = "(none)"
CAP_LINE = "connection cap reached"
REQUEST = head("GET", "/nowhere")  # answered by the sidecar itself (404 no_route): no upstream involved
UPLOAD = head("POST", "/nowhere", [("Content-Length", "1000")])  # refused at once; its body is still to come


@pytest.fixture()
def capped(sidecar_env: dict[str, str]) -> Iterator[SidecarProcess]:
    process = SidecarProcess(POLICY, sidecar_env, ("--drain-delay", "0", "--max-connections", str(CAP))).start()
    yield process
    assert process.stop() == 0


@pytest.fixture()
def admin(capped: SidecarProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=capped.admin, timeout=30, trust_env=False) as http:
        yield http


def _served(sock: socket.socket) -> None:
    """A request on `sock` is answered (the 404 of a path no route matches) and the connection kept."""
    sock.sendall(REQUEST)
    reply = read_reply(sock, DEADLINE)
    assert (reply.status, reply.json()["reason"]) == (404, "no_route")
    assert reply.values("connection") != ["close"]


def _cap_lines(process: SidecarProcess) -> list[str]:
    return [line for line in process.lines if CAP_LINE in line]


def _counted(process: SidecarProcess, admin: httpx.Client, closed_idle: int, refused: int, began: float) -> None:
    """The idle connections closed and the new ones refused, each counted; one log line per interval at most."""
    assert sample(admin, "sidecar_idle_connections_closed_total") == closed_idle
    assert rejections(admin, NONE, "too_many_connections") == refused
    if closed_idle or refused:
        process.wait_for_log(CAP_LINE, DEADLINE, max_connections=CAP)
        assert 1 <= len(_cap_lines(process)) <= 1 + (time.monotonic() - began) // LOG_INTERVAL  # not one each
    else:
        assert _cap_lines(process) == []


def test_past_the_cap_the_connections_idle_longest_are_closed_and_new_ones_served(
    capped: SidecarProcess, admin: httpx.Client
) -> None:
    began = time.monotonic()
    socks: list[socket.socket] = []
    try:
        for _ in range(CAP + 2):  # the cap's worth, each idle after its answer (kept alive), in this order; then
            socks.append(connect(capped.proxy, timeout=DEADLINE))  # two more: each closes the one idle longest
            _served(socks[-1])
        assert closed(socks[0], DEADLINE) and closed(socks[1], DEADLINE)
        for sock in socks[2:]:  # the newer ones stay open and keep serving
            _served(sock)
    finally:
        for sock in socks:
            sock.close()
    _counted(capped, admin, closed_idle=2, refused=0, began=began)


def test_at_the_cap_with_none_idle_a_new_connection_is_refused_503_and_counted(
    capped: SidecarProcess, admin: httpx.Client
) -> None:
    began = time.monotonic()
    busy = [connect(capped.proxy, timeout=DEADLINE) for _ in range(CAP)]
    newcomers: list[socket.socket] = []
    try:
        for sock in busy:  # each answered at once, its body still unread: busy until the body ends
            sock.sendall(UPLOAD)
            assert read_reply(sock, DEADLINE).status == 404
        newcomers += [connect(capped.proxy, timeout=DEADLINE) for _ in range(3)]
        for sock in newcomers:
            sock.sendall(REQUEST)
            reply = read_reply(sock, DEADLINE)
            problem = reply.json()
            assert (reply.status, problem["status"], problem["reason"]) == (503, 503, "too_many_connections")
            assert reply.values("content-type") == ["application/problem+json"]
            assert reply.values("connection") == ["close"] and closed(sock, DEADLINE)
        for sock in busy:  # none was cut off: each ends its body and serves its next request
            sock.sendall(b"x" * 1000)
            _served(sock)
    finally:
        for sock in busy + newcomers:
            sock.close()
    _counted(capped, admin, closed_idle=0, refused=3, began=began)


def test_below_the_cap_nothing_changes(capped: SidecarProcess, admin: httpx.Client) -> None:
    began = time.monotonic()
    socks = [connect(capped.proxy, timeout=DEADLINE) for _ in range(CAP)]
    try:
        for sock in socks:
            _served(sock)
        for sock in socks:  # all still open, each serving again
            _served(sock)
    finally:
        for sock in socks:
            sock.close()
    _counted(capped, admin, closed_idle=0, refused=0, began=began)
