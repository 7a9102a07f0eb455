"""Opaque tokens against a live RFC 7662 endpoint: active passes, inactive is 401 token_inactive, and an endpoint
that goes away is 503 introspection_unavailable (counted), never a 401."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.metrics import sample
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
    """An authorization server's introspection endpoint: answers for the tokens it issued, to the client it knows."""

    def __init__(self) -> None:
        self.active: dict[str, dict[str, object]] = {}
        self.calls = 0

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
            return JSONResponse(self.active.get(form.get("token", ""), {"active": False}))

        return Starlette(routes=[Route("/introspect", introspect, methods=["POST"])])


@pytest.fixture()
def endpoint() -> Iterator[tuple[Endpoint, ThreadServer]]:
    found = Endpoint()
    server = ThreadServer(lambda _url: found.app())
    yield found, server
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
