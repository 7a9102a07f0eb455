"""Random opaque tokens against a hung introspection endpoint: requests waiting for answers are bounded per provider
(`introspection.max_in_flight`, `max_waiting`), the rest are refused 503 `introspection_unavailable` at once and
counted, a cached token is still answered, and the process does not grow with the flood.

The endpoint answers the tokens it issued and hangs on every other one until the test releases it (a hung
authorization server); every wait here is bounded."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.support.metrics import sample
from tests.support.servers import SidecarProcess, ThreadServer

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
providers:
  opaque:
    introspection:
      endpoint: ${INTROSPECTION}/introspect
      client_id: sidecar
      client_secret: s3cret
{limits}
    audiences: [api://flows]
routes:
  - name: flows
    match: { path: /flows }
    max_concurrent: 16
    upstream: ${UPSTREAM}
    allow:
      - provider: opaque
"""
DEADLINE = 20.0  # the longest any wait here lasts
RSS_BOUND = 32 * 1024 * 1024  # growth of peak RSS under the flood (before: 85 MB in 6 s at 1.3k requests a second)


class HungEndpoint:
    """Answers the tokens it issued; holds every other call until `released` (polled: the server's own loop)."""

    def __init__(self) -> None:
        self.active: dict[str, dict[str, object]] = {}
        self.released = threading.Event()

    def issue(self) -> str:
        token = secrets.token_urlsafe(24)
        self.active[token] = {"active": True, "sub": "svc-1", "aud": "api://flows"}
        return token

    def app(self) -> Starlette:
        async def introspect(request: Request) -> JSONResponse:
            token = dict(parse_qsl((await request.body()).decode())).get("token", "")
            if token in self.active:
                return JSONResponse(self.active[token])
            while not self.released.is_set():
                await asyncio.sleep(0.05)
            return JSONResponse({"active": False})

        return Starlette(routes=[Route("/introspect", introspect, methods=["POST"])])


@pytest.fixture()
def endpoint() -> Iterator[tuple[HungEndpoint, ThreadServer]]:
    found = HungEndpoint()
    server = ThreadServer(lambda _url: found.app())
    yield found, server
    found.released.set()
    server.stop()


def _start(tmp_path: Path, url: str, upstream: str, limits: str) -> SidecarProcess:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.replace("{limits}", limits))
    return SidecarProcess(path, {"INTROSPECTION": url, "UPSTREAM": upstream}).start()


def _failures(admin: httpx.Client, error: str) -> float:
    return sample(admin, "sidecar_introspection_failures_total", provider="opaque", error=error)


def test_past_max_waiting_random_tokens_are_refused_at_once_and_a_cached_token_passes(
    tmp_path: Path, upstream: ThreadServer, endpoint: tuple[HungEndpoint, ThreadServer]
) -> None:
    """max_in_flight 4, max_waiting 8: of 20 random tokens sent at once, 8 wait on the hung endpoint and 12 are
    refused 503 `introspection_unavailable` while those 8 still wait (not after the 5 s introspection timeout),
    counted as `overloaded`; a token answered before is still let through."""
    found, server = endpoint
    sidecar = _start(tmp_path, server.url, upstream.url, "      max_in_flight: 4\n      max_waiting: 8")
    legit = found.issue()
    try:
        with (
            httpx.Client(base_url=sidecar.proxy, trust_env=False, timeout=DEADLINE) as http,
            httpx.Client(base_url=sidecar.admin, trust_env=False, timeout=DEADLINE) as admin,
            ThreadPoolExecutor(20) as pool,
        ):

            def call(token: str) -> httpx.Response:
                return http.get("/flows", headers={"Authorization": f"Bearer {token}"})

            assert call(legit).status_code == 200  # cached from here on
            pending: set[Future[httpx.Response]] = {pool.submit(call, secrets.token_urlsafe(24)) for _ in range(20)}
            refused: list[httpx.Response] = []
            stop = time.monotonic() + DEADLINE
            while len(refused) < 12 and pending and time.monotonic() < stop:
                done, pending = wait(pending, timeout=stop - time.monotonic(), return_when=FIRST_COMPLETED)
                refused += [future.result() for future in done]
            assert len(pending) == 8, "the requests within max_waiting should still wait on the hung endpoint"
            assert [(r.status_code, r.json()["reason"]) for r in refused] == [(503, "introspection_unavailable")] * 12
            assert _failures(admin, "overloaded") == 12
            assert _failures(admin, "timeout") == 0  # the refusals came before any call timed out
            assert call(legit).status_code == 200
            found.released.set()
            assert [future.result().status_code for future in pending] == [401] * 8
    finally:
        assert sidecar.stop() == 0


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_a_flood_of_random_tokens_on_a_hung_endpoint_does_not_grow_the_process(
    tmp_path: Path, upstream: ThreadServer, endpoint: tuple[HungEndpoint, ThreadServer]
) -> None:
    """Default limits. One client sends requests with random opaque tokens as fast as it can (connect, send, close;
    at most 8000 or 6 s): at most 256 requests wait on the hung endpoint, the rest are refused at once, so peak RSS
    grows less than RSS_BOUND (before: every request waited the whole 5 s timeout; the process grew by 85 MB)."""
    found, server = endpoint
    sidecar = _start(tmp_path, server.url, upstream.url, "")
    host, port = sidecar.proxy.removeprefix("http://").split(":")
    legit = found.issue()
    try:
        with httpx.Client(base_url=sidecar.admin, trust_env=False, timeout=DEADLINE) as admin:
            with httpx.Client(base_url=sidecar.proxy, trust_env=False, timeout=DEADLINE) as http:
                assert http.get("/flows", headers={"Authorization": f"Bearer {legit}"}).status_code == 200
            Path(f"/proc/{sidecar.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
            before = _status(sidecar.pid, "VmRSS")
            sent, stop = 0, time.monotonic() + 6.0
            while sent < 8000 and time.monotonic() < stop:
                with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
                    token = secrets.token_hex(16).encode()
                    sock.sendall(b"GET /flows HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + token + b"\r\n\r\n")
                sent += 1
            grown = _status(sidecar.pid, "VmHWM") - before
            assert grown < RSS_BOUND, f"peak RSS grew by {grown / 2**20:.0f} MiB over {sent} requests"
            assert _failures(admin, "overloaded") > 0
    finally:
        found.released.set()
        assert sidecar.stop() == 0
