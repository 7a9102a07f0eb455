"""Clients that stop reading cannot starve other routes, against a real sidecar process, a real download upstream
and raw sockets with a small receive buffer that never read: each is cut off after `limits.send_timeout` (counted,
logged, its upstream connection dropped, not reused), and a route holds at most its share of the upstream pool, so
callers of other routes are answered meanwhile."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.download import Download, Served
from tests.support.metrics import rejections, sample
from tests.support.rawsock import closed, connect, head, send_raw
from tests.support.servers import SidecarProcess

POLICY = Path(__file__).with_name("stall.yaml")
MIB = 1024**2
DOWNLOAD_SIZE = 128 * MIB  # far more than every buffer between the upstream and a client that does not read
SHARE = 2  # stall.yaml's pool has 4 connections: a route may hold half of them (the default max_per_route)


@dataclass
class Stalling:
    sidecar: SidecarProcess
    download: Download
    admin: httpx.Client


@contextmanager
def _stalling(env: dict[str, str], send_timeout: str, download_timeout: str) -> Iterator[Stalling]:
    with ExitStack() as stack:
        download = Download(DOWNLOAD_SIZE)
        stack.callback(download.stop)
        timeouts = {"SEND_TIMEOUT": send_timeout, "DOWNLOAD_TIMEOUT": download_timeout}
        sidecar = SidecarProcess(POLICY, {**env, **timeouts, "DOWNLOAD": download.url}).start()
        admin = stack.enter_context(httpx.Client(base_url=sidecar.admin, timeout=30, trust_env=False))
        try:
            yield Stalling(sidecar, download, admin)
        finally:
            assert sidecar.stop() == 0


@pytest.fixture(scope="module")
def cutting(sidecar_env: dict[str, str]) -> Iterator[Stalling]:
    """A sidecar that cuts off a client after 1 s without room to write."""
    with _stalling(sidecar_env, send_timeout="1s", download_timeout="30s") as servers:
        yield servers


@pytest.fixture(scope="module")
def sharing(sidecar_env: dict[str, str]) -> Iterator[Stalling]:
    """A sidecar that never cuts a client off during a test, whose download route waits 1 s for a connection."""
    with _stalling(sidecar_env, send_timeout="10m", download_timeout="1s") as servers:
        yield servers


def _stalled(base_url: str, path: str) -> socket.socket:
    """A client that asks for `path` and never reads: its receive window (4 KiB) is full at once."""
    parts = urlsplit(base_url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window it offers stays small
    sock.settimeout(10)
    sock.connect((parts.hostname, parts.port))
    sock.sendall(head("GET", path))
    return sock


def _streaming(first: int, count: int) -> Callable[[list[Served]], bool]:
    """At least `count` of the upstream connections opened since the `first` are streaming a download."""
    return lambda served: sum(s.state == "streaming" for s in served[first:]) >= count


def test_clients_that_stop_reading_are_cut_off_and_other_routes_are_served(cutting: Stalling) -> None:
    """The attack found: eight anonymous downloads never read. Each is cut off once it took none of its response
    for send_timeout; its upstream connection is dropped (not reused), counted and logged; a caller of another route
    is answered while they stall."""
    before = sample(cutting.admin, "sidecar_client_write_timeouts_total", route="download")
    first = len(cutting.download.served)
    stalled = [_stalled(cutting.sidecar.proxy, f"/download/stalled-{n}") for n in range(8)]
    try:
        cutting.download.wait(_streaming(first, SHARE))
        other = send_raw(cutting.sidecar.proxy, head("GET", "/echo/other-route", [("Connection", "close")]))
        assert other.status == 200, other.body  # not a 504: the pool is not all the download route's
        assert other.json()["path"] == "/other-route"

        ended = cutting.download.wait(
            lambda served: len(served) >= first + 8 and all(s.state != "streaming" for s in served[first:]), 60
        )[first:]
        # Each upstream connection dropped with its exchange: never finished, never reused.
        assert [(s.state, s.exchanges) for s in ended] == [("dropped", 1)] * 8
        # Backpressure: while a client does not read, the sidecar does not read the upstream either.
        assert all(s.written < 32 * MIB for s in ended), [s.written for s in ended]
        assert sample(cutting.admin, "sidecar_client_write_timeouts_total", route="download") == before + 8
        lines = cutting.sidecar.wait_for_logs("client stopped reading", 8)
        assert [(line["route"], line["send_timeout"]) for line in lines] == [("download", 1.0)] * 8
        assert all(closed(sock) for sock in stalled)  # what they had in their buffers, then the end
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.alone  # the reading client must never pause 1 s (send_timeout): a busy machine could pause it
def test_a_client_that_reads_is_not_cut_off_however_long_the_download(cutting: Stalling) -> None:
    """The deadline is on a client that takes nothing, not on the response: a download that lasts longer than
    send_timeout, with the sidecar waiting for room many times over, ends whole."""
    before = sample(cutting.admin, "sidecar_client_write_timeouts_total", route="download")
    size, received = 1024 * MIB, 0
    with connect(cutting.sidecar.proxy, timeout=30) as sock:
        sock.sendall(head("GET", f"/download/{size}", [("Connection", "close")]))
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    assert received > size  # the head, and the whole body
    assert sample(cutting.admin, "sidecar_client_write_timeouts_total", route="download") == before


def test_a_route_holding_its_share_of_the_pool_waits_then_refuses_and_other_routes_are_served(
    sharing: Stalling,
) -> None:
    admin, proxy = sharing.admin, sharing.sidecar.proxy
    before = rejections(admin, "download", "pool_share_full")
    first = len(sharing.download.served)
    stalled = [_stalled(proxy, f"/download/holding-{n}") for n in range(SHARE)]
    try:
        sharing.download.wait(_streaming(first, SHARE))
        # The route's share is taken: a third download waits for one of its connections (1 s), then 503.
        refused = send_raw(proxy, head("GET", "/download/1024", [("Connection", "close")]))
        problem = refused.json()
        assert (refused.status, problem["reason"], refused.headers["retry-after"]) == (503, "pool_share_full", "1")
        assert refused.headers["content-type"] == "application/problem+json"
        assert len(sharing.download.served) == first + SHARE  # it never reached the upstream
        assert rejections(admin, "download", "pool_share_full") == before + 1
        sharing.sidecar.wait_for_log(
            "request", 10, request_id=problem["request_id"], reason="pool_share_full", status=503, decision="reject"
        )
        # Meanwhile the rest of the pool serves the other routes.
        other = send_raw(proxy, head("GET", "/echo/meanwhile", [("Connection", "close")]))
        assert other.status == 200, other.body
        assert other.json()["path"] == "/meanwhile"
    finally:
        for sock in stalled:
            sock.close()  # unread data: the kernel resets the connection
    # With their clients gone, the route's connections are dropped and its share given back.
    sharing.download.wait(lambda served: all(s.state == "dropped" for s in served[first : first + SHARE]))
    again = send_raw(proxy, head("GET", "/download/1024", [("Connection", "close")]))
    assert (again.status, len(again.body)) == (200, 1024)
