"""Opaque tokens against a live RFC 7662 endpoint: active passes, inactive is 401 token_inactive, and an endpoint
that goes away is 503 introspection_unavailable (counted), never a 401; with a hung endpoint, a flood of random
tokens is bounded per provider (max_in_flight, max_waiting) and the process does not grow."""

from __future__ import annotations

import asyncio
import base64
import json
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
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.metrics import sample
from tests.support.proc import memory
from tests.support.servers import SidecarProcess, ThreadServer

SECRET = "introspection-secret-4b1d"
POLICY = """\
version: 1
providers:
  opaque:
    introspection:
      endpoint: ${INTROSPECTION}/introspect
      client_id: sidecar
      client_secret: ${INTROSPECTION_SECRET}
    audiences: [api://flows]
routes:
  - name: flows
    match: { path: /flows, methods: [POST] }
    upstream: ${UPSTREAM}
    allow:
      - provider: opaque
        scopes: [flows.run]
"""


class Endpoint:
    """An authorization server's introspection endpoint: answers for the tokens it issued, to the client it knows.
    With `hung` set, a call about any other token hangs until `hung` is set (a hung server; polled, since the
    server runs on a loop of its own)."""

    def __init__(self) -> None:
        self.active: dict[str, dict[str, object]] = {}
        self.calls = 0
        self.hung: threading.Event | None = None

    def issue(self, scope: str) -> str:
        token = secrets.token_urlsafe(24)
        self.active[token] = {"active": True, "sub": "svc-1", "client_id": "c1", "scope": scope, "aud": "api://flows"}
        return token

    def app(self) -> Starlette:
        async def introspect(request: Request) -> JSONResponse:
            self.calls += 1
            expected = "Basic " + base64.b64encode(f"sidecar:{SECRET}".encode()).decode()
            if request.headers.get("authorization") != expected:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            form = dict(parse_qsl((await request.body()).decode()))
            token = form.get("token", "")
            while token not in self.active and self.hung is not None and not self.hung.is_set():
                await asyncio.sleep(0.05)
            return JSONResponse(self.active.get(token, {"active": False}))

        return Starlette(routes=[Route("/introspect", introspect, methods=["POST"])])


@pytest.fixture()
def endpoint() -> Iterator[tuple[Endpoint, ThreadServer]]:
    found = Endpoint()
    server = ThreadServer(lambda _url: found.app())
    yield found, server
    if found.hung is not None:
        found.hung.set()
    server.stop()


def test_opaque_tokens_through_introspection(
    tmp_path: Path, upstream: ThreadServer, endpoint: tuple[Endpoint, ThreadServer]
) -> None:
    found, server = endpoint
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    env = {"INTROSPECTION": server.url, "INTROSPECTION_SECRET": SECRET, "UPSTREAM": upstream.url}
    sidecar = SidecarProcess(path, env).start()
    tokens = [found.issue("flows.run"), found.issue("flows.read"), secrets.token_urlsafe(24), found.issue("flows.run")]
    try:
        with (
            httpx.Client(trust_env=False, timeout=10) as http,
            httpx.Client(base_url=sidecar.admin, trust_env=False, timeout=10) as admin,
        ):

            def call(token: str) -> httpx.Response:
                return http.post(sidecar.proxy + "/flows", headers={"Authorization": f"Bearer {token}"})

            assert call(tokens[0]).status_code == 200
            assert call(tokens[0]).status_code == 200 and found.calls == 1  # cached until exp (or 5 min)
            assert call(tokens[1]).status_code == 403  # active, but without the scope
            inactive = call(tokens[2])
            assert (inactive.status_code, inactive.json()["reason"]) == (401, "token_inactive")
            server.stop()
            down = call(tokens[3])
            assert (down.status_code, down.json()["reason"]) == (503, "introspection_unavailable")
            assert sample(admin, "sidecar_introspection_failures_total", provider="opaque", error="unreachable") == 1
            assert sample(admin, "sidecar_rejections_total", route="flows", reason="introspection_unavailable") == 1
    finally:
        assert sidecar.stop() == 0
    leaked = [line for line in sidecar.lines for secret in (*tokens, SECRET) if secret in line]
    assert not leaked, leaked[:3]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover - Linux always has it


def test_150_distinct_1_mib_answers_are_503_and_memory_stays_bounded(tmp_path: Path, upstream: ThreadServer) -> None:
    """A hostile or broken authorization server answers every token with 1 MB (under the 1 MiB that discovery and
    JWKS may have, far over the 64 KiB an introspection answer may have). Each is refused as unavailable (503) and
    given up at the cap; nothing of it is cached, so the sidecar's memory does not grow with the answers."""
    padding = "x" * 1_000_000

    async def introspect(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode()))
        body = {"active": True, "sub": form.get("token", ""), "aud": "api://flows", "scope": "flows.run"}
        return Response(json.dumps({**body, "pad": form.get("token", "") + padding}), media_type="application/json")

    server = ThreadServer(lambda _url: Starlette(routes=[Route("/introspect", introspect, methods=["POST"])]))
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    env = {"INTROSPECTION": server.url, "INTROSPECTION_SECRET": SECRET, "UPSTREAM": upstream.url}
    sidecar = SidecarProcess(path, env).start()
    try:
        with httpx.Client(base_url=sidecar.proxy, trust_env=False, timeout=30) as http:

            def call() -> httpx.Response:
                return http.post("/flows", headers={"Authorization": f"Bearer {secrets.token_urlsafe(24)}"})

            warm = [call() for _ in range(5)]  # connections, code paths and allocator pools in place
            before = _rss_kib(sidecar.pid)
            answers = [call() for _ in range(150)]
            after = _rss_kib(sidecar.pid)
        refused = [(r.status_code, r.json()["reason"]) for r in warm + answers]
        assert refused == [(503, "introspection_unavailable")] * 155
        assert after - before < 32 * 1024, f"RSS grew {(after - before) // 1024} MiB over 150 answers of 1 MB"
    finally:
        assert sidecar.stop() == 0
        server.stop()


# --- a hung endpoint and a flood of random tokens: requests waiting for answers are bounded per provider ----------

FLOOD_DEADLINE = 20.0  # the longest any wait below lasts
RSS_BOUND = 32 * 1024 * 1024  # growth of peak RSS under the flood (before: 85 MB in 6 s at 1.3k requests a second)


def _start(tmp_path: Path, url: str, upstream: str, limits: str = "") -> SidecarProcess:
    path = tmp_path / "policy.yaml"
    path.write_text(
        POLICY.replace(
            "      client_secret: ${INTROSPECTION_SECRET}\n", "      client_secret: ${INTROSPECTION_SECRET}\n" + limits
        )
    )
    return SidecarProcess(path, {"INTROSPECTION": url, "INTROSPECTION_SECRET": SECRET, "UPSTREAM": upstream}).start()


def _failures(admin: httpx.Client, error: str) -> float:
    return sample(admin, "sidecar_introspection_failures_total", provider="opaque", error=error)


@pytest.mark.alone  # "at once": refused before the 5 s introspection timeout, with 20 requests in flight
def test_past_max_waiting_random_tokens_are_refused_at_once_and_a_cached_token_passes(
    tmp_path: Path, upstream: ThreadServer, endpoint: tuple[Endpoint, ThreadServer]
) -> None:
    """max_in_flight 4, max_waiting 8: of 20 random tokens sent at once, 8 wait on the hung endpoint and 12 are
    refused 503 `introspection_unavailable` while those 8 still wait (not after the 5 s introspection timeout),
    counted as `overloaded`; a token answered before is still let through."""
    found, server = endpoint
    found.hung = hung = threading.Event()
    sidecar = _start(tmp_path, server.url, upstream.url, "      max_in_flight: 4\n      max_waiting: 8\n")
    legit = found.issue("flows.run")
    try:
        with (
            httpx.Client(base_url=sidecar.proxy, trust_env=False, timeout=FLOOD_DEADLINE) as http,
            httpx.Client(base_url=sidecar.admin, trust_env=False, timeout=FLOOD_DEADLINE) as admin,
            ThreadPoolExecutor(20) as pool,
        ):

            def call(token: str) -> httpx.Response:
                return http.post("/flows", headers={"Authorization": f"Bearer {token}"})

            assert call(legit).status_code == 200  # cached from here on
            pending: set[Future[httpx.Response]] = {pool.submit(call, secrets.token_urlsafe(24)) for _ in range(20)}
            refused: list[httpx.Response] = []
            stop = time.monotonic() + FLOOD_DEADLINE
            while len(refused) < 12 and pending and time.monotonic() < stop:
                done, pending = wait(pending, timeout=stop - time.monotonic(), return_when=FIRST_COMPLETED)
                refused += [future.result() for future in done]
            assert len(pending) == 8, "the requests within max_waiting should still wait on the hung endpoint"
            assert [(r.status_code, r.json()["reason"]) for r in refused] == [(503, "introspection_unavailable")] * 12
            assert _failures(admin, "overloaded") == 12
            assert _failures(admin, "timeout") == 0  # the refusals came before any call timed out
            assert call(legit).status_code == 200
            hung.set()
            assert [future.result().status_code for future in pending] == [401] * 8
    finally:
        assert sidecar.stop() == 0


@pytest.mark.alone  # the flood must outrun max_waiting within 6 s: a busy machine's client sends too few to
def test_a_flood_of_random_tokens_on_a_hung_endpoint_does_not_grow_the_process(
    tmp_path: Path, upstream: ThreadServer, endpoint: tuple[Endpoint, ThreadServer]
) -> None:
    """Default limits. One client sends requests with random opaque tokens as fast as it can (connect, send, close;
    at most 8000 or 6 s): at most 256 requests wait on the hung endpoint, the rest are refused at once, so peak RSS
    grows less than RSS_BOUND (before: every request waited the whole 5 s timeout; the process grew by 85 MB)."""
    found, server = endpoint
    found.hung = hung = threading.Event()
    sidecar = _start(tmp_path, server.url, upstream.url, "")
    host, port = sidecar.proxy.removeprefix("http://").split(":")
    legit = found.issue("flows.run")
    try:
        with httpx.Client(base_url=sidecar.admin, trust_env=False, timeout=FLOOD_DEADLINE) as admin:
            with httpx.Client(base_url=sidecar.proxy, trust_env=False, timeout=FLOOD_DEADLINE) as http:
                assert http.post("/flows", headers={"Authorization": f"Bearer {legit}"}).status_code == 200
            Path(f"/proc/{sidecar.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
            before = memory(sidecar.pid, "VmRSS")
            sent, stop = 0, time.monotonic() + 6.0
            while sent < 8000 and time.monotonic() < stop:
                with socket.create_connection((host, int(port)), timeout=FLOOD_DEADLINE) as sock:
                    token = secrets.token_hex(16).encode()
                    sock.sendall(
                        b"POST /flows HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nAuthorization: Bearer "
                        + token
                        + b"\r\n\r\n"
                    )
                sent += 1
            grown = memory(sidecar.pid, "VmHWM") - before
            assert grown < RSS_BOUND, f"peak RSS grew by {grown / 2**20:.0f} MiB over {sent} requests"
            assert _failures(admin, "overloaded") > 0
    finally:
        hung.set()
        assert sidecar.stop() == 0
