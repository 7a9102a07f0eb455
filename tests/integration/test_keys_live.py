"""Keys from a live issuer: readiness, an issuer that comes up late, rotation, and the unknown-kid flood."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support import jwtkit
from tests.support.servers import SidecarProcess, ThreadServer, free_closed_port, serve_demo_issuer

POLICY = """\
version: 1
providers:
  contoso:
    issuer: ${ISSUER}/11111111-2222-3333-4444-555555555555/v2.0
    audiences: [api://trigger-gateway]
    jwks_min_refresh: 60s
routes:
  - name: guarded
    match: { path: /guarded, methods: [GET] }
    upstream: ${UPSTREAM}
    allow:
      - provider: contoso
"""


@pytest.fixture()
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def _token(issuer: DemoIssuer) -> str:
    return issuer.mint(CONTOSO_TENANT, {"aud": "api://trigger-gateway", "oid": "caller"})


@pytest.fixture()
def own_issuer() -> Iterator[tuple[DemoIssuer, ThreadServer]]:
    issuer, server = serve_demo_issuer()
    yield issuer, server
    server.stop()


def test_readyz_waits_for_keys_and_an_issuer_that_comes_up_late(policy_file: Path, upstream: ThreadServer) -> None:
    port = free_closed_port()
    sidecar = SidecarProcess(policy_file, {"ISSUER": f"http://127.0.0.1:{port}", "UPSTREAM": upstream.url})
    sidecar.start(wait_ready=False)
    try:
        with httpx.Client(trust_env=False, timeout=10) as http:
            assert http.get(sidecar.admin + "/healthz").status_code == 200
            assert http.get(sidecar.admin + "/readyz").status_code == 503
            refused = http.get(sidecar.proxy + "/guarded", headers={"Authorization": "Bearer a.b.c"})
            assert refused.status_code in (401, 503)  # never forwarded while no key is known
            late_issuer, late = serve_demo_issuer(port)
            try:
                sidecar.wait_ready(timeout=30)  # raises if the keys of the late issuer never arrive
                assert http.get(sidecar.admin + "/readyz").status_code == 200
                ok = http.get(sidecar.proxy + "/guarded", headers={"Authorization": f"Bearer {_token(late_issuer)}"})
                assert ok.status_code == 200
            finally:
                late.stop()
    finally:
        assert sidecar.stop() == 0


def test_unknown_kid_flood_fetches_the_jwks_at_most_once(
    policy_file: Path, upstream: ThreadServer, own_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    issuer, server = own_issuer
    sidecar = SidecarProcess(policy_file, {"ISSUER": server.url, "UPSTREAM": upstream.url}).start()
    try:
        fetches_at_start = issuer.jwks_requests
        stranger = jwtkit.rsa_key("stranger")
        claims = {"iss": issuer.issuer_url(CONTOSO_TENANT), "aud": "api://trigger-gateway", "exp": 4_000_000_000}
        tokens = [jwtkit.mint(claims, stranger, kid=uuid.uuid4().hex) for _ in range(200)]

        async def flood() -> list[int]:
            async with httpx.AsyncClient(base_url=sidecar.proxy, trust_env=False, timeout=30) as http:
                responses = await asyncio.gather(
                    *(http.get("/guarded", headers={"Authorization": f"Bearer {t}"}) for t in tokens)
                )
            return [r.status_code for r in responses]

        statuses = asyncio.run(flood())
        assert statuses == [401] * len(tokens)
        assert issuer.jwks_requests - fetches_at_start <= 1
    finally:
        assert sidecar.stop() == 0


def test_key_rotation_is_followed_without_a_failed_call(
    policy_file: Path, upstream: ThreadServer, own_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    issuer, server = own_issuer
    sidecar = SidecarProcess(policy_file, {"ISSUER": server.url, "UPSTREAM": upstream.url}).start()
    try:
        with httpx.Client(base_url=sidecar.proxy, trust_env=False, timeout=10) as http:
            before = _token(issuer)
            assert http.get("/guarded", headers={"Authorization": f"Bearer {before}"}).status_code == 200
            issuer.rotate(CONTOSO_TENANT)
            after = _token(issuer)
            assert http.get("/guarded", headers={"Authorization": f"Bearer {after}"}).status_code == 200
            assert http.get("/guarded", headers={"Authorization": f"Bearer {before}"}).status_code == 200
    finally:
        assert sidecar.stop() == 0
