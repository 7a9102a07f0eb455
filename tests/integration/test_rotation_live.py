"""Rotation and staleness against a live issuer (the Entra preset on a loopback authority): the scheduled refresh
follows a rotation before a token needs it, an issuer that goes away leaves the sidecar verifying with its last good
keys (ready, and saying so in a log line and a metric) until max_stale, and client-credentials callers are allowed
precisely. The schedule is 1 s here; tests wait on log lines and metrics, never on the clock."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support import jwtkit
from tests.support.metrics import sample
from tests.support.servers import SidecarProcess, ThreadServer, serve_demo_issuer

AUDIENCE = "api://trigger-gateway"
POLICY = f"""\
version: 1
providers:
  contoso:
    entra: {{tenant: {CONTOSO_TENANT}, authority: '${{ISSUER}}'}}
    audiences: [{AUDIENCE}]
    jwks_min_refresh: 1h            # one kid-miss refetch per hour: rotations must come from the schedule
    jwks_refresh: {{min: 1s, max: 1s}}
    max_stale: ${{MAX_STALE}}
routes:
  - name: guarded
    match: {{path: /guarded, methods: [GET]}}
    upstream: ${{UPSTREAM}}
    allow: [{{provider: contoso}}]
  - name: automation
    match: {{path: /automation, methods: [POST]}}
    upstream: ${{UPSTREAM}}
    allow: [{{provider: contoso, apps: [payroll-app], app_tokens_only: true}}]
"""


@pytest.fixture()
def own_issuer() -> Iterator[tuple[DemoIssuer, ThreadServer]]:
    issuer, server = serve_demo_issuer()
    yield issuer, server
    server.stop()


@pytest.fixture()
def start(
    tmp_path: Path, upstream: ThreadServer, own_issuer: tuple[DemoIssuer, ThreadServer]
) -> Iterator[Callable[[str], SidecarProcess]]:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    started: list[SidecarProcess] = []

    def run(max_stale: str) -> SidecarProcess:
        env = {"ISSUER": own_issuer[1].url, "UPSTREAM": upstream.url, "MAX_STALE": max_stale}
        started.append(SidecarProcess(path, env).start())
        return started[-1]

    yield run
    for sidecar in started:
        assert sidecar.stop() == 0
        assert not [line for line in sidecar.lines if "eyJ" in line]  # no token in any log line


def token(issuer: DemoIssuer, **claims: object) -> str:
    return issuer.mint(CONTOSO_TENANT, {"aud": AUDIENCE, "oid": "caller", "jti": uuid.uuid4().hex, **claims})


def wait_for_sample(admin: httpx.Client, name: str, wanted: Callable[[float], bool], **labels: str) -> float:
    """Scrape until the sample satisfies `wanted` (bounded: 10 s, no sleeping between scrapes of a live server)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        value = sample(admin, name, **labels)
        if wanted(value):
            return value
    raise AssertionError(f"{name}{labels} never satisfied the condition; last value {value}")


def test_scheduled_refresh_follows_a_rotation_without_a_failed_call(
    start: Callable[[str], SidecarProcess], own_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    issuer, _ = own_issuer
    sidecar = start("1h")
    with (
        httpx.Client(base_url=sidecar.proxy, trust_env=False, timeout=10) as http,
        httpx.Client(base_url=sidecar.admin, trust_env=False, timeout=10) as admin,
    ):
        before = token(issuer)
        assert http.get("/guarded", headers={"Authorization": f"Bearer {before}"}).status_code == 200
        # Spend the hour's one kid-miss refetch on a stranger: from here on only the schedule can bring new keys.
        stranger = jwtkit.mint({"iss": issuer.issuer_url(CONTOSO_TENANT), "exp": 4e9}, jwtkit.rsa_key("stranger"))
        assert http.get("/guarded", headers={"Authorization": f"Bearer {stranger}"}).status_code == 401
        issuer.rotate(CONTOSO_TENANT)
        fetched = sidecar.wait_for_log("signing keys fetched", provider="contoso")
        assert len(fetched["added"]) == 1 and fetched["removed"] == [] and fetched["keys"] == 2
        for bearer in (
            token(issuer),
            before,
            token(issuer, ver="1.0", iss=f"{issuer.issuer_url(CONTOSO_TENANT)[:-4]}"),
        ):
            assert http.get("/guarded", headers={"Authorization": f"Bearer {bearer}"}).status_code == 200
        assert sample(admin, "sidecar_rejections_total", route="guarded", reason="unknown_key", mode="enforce") == 1
        assert wait_for_sample(admin, "sidecar_jwks_keys", lambda v: v == 2, provider="contoso") == 2
        assert sample(admin, "sidecar_jwks_refresh_total", provider="contoso", result="success") >= 2


def test_an_issuer_that_goes_away_leaves_stale_keys_verifying(
    start: Callable[[str], SidecarProcess], own_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    issuer, server = own_issuer
    sidecar = start("1h")
    server.stop()
    stale = sidecar.wait_for_log("signing keys stale: verifying with the last good keys", provider="contoso")
    assert stale["level"] == "warning" and stale["max_stale_s"] == 3600
    with (
        httpx.Client(trust_env=False, timeout=10) as http,
        httpx.Client(base_url=sidecar.admin, trust_env=False, timeout=10) as admin,
    ):
        assert http.get(sidecar.admin + "/readyz").status_code == 200
        fresh = token(issuer)  # never seen before: verified with the stale keys, not from a cache
        assert http.get(sidecar.proxy + "/guarded", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200
        assert wait_for_sample(admin, "sidecar_jwks_stale", lambda v: v == 1, provider="contoso") == 1
        assert sample(admin, "sidecar_jwks_refresh_total", provider="contoso", result="error") >= 1
        assert sample(admin, "sidecar_jwks_age_seconds", provider="contoso") >= 0


def test_keys_older_than_max_stale_stop_verifying(
    start: Callable[[str], SidecarProcess], own_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    issuer, server = own_issuer
    sidecar = start("2s")
    server.stop()
    sidecar.wait_for_log("signing keys older than max_stale: tokens refused (503) until a fetch succeeds")
    with httpx.Client(trust_env=False, timeout=10) as http:
        assert http.get(sidecar.admin + "/readyz").status_code == 503
        refused = http.get(sidecar.proxy + "/guarded", headers={"Authorization": f"Bearer {token(issuer)}"})
        assert refused.status_code == 503 and refused.json()["reason"] == "keys_unavailable"


def test_client_credentials_callers_are_allowed_precisely(
    start: Callable[[str], SidecarProcess], own_issuer: tuple[DemoIssuer, ThreadServer]
) -> None:
    issuer, _ = own_issuer
    sidecar = start("1h")
    with httpx.Client(trust_env=False, timeout=10) as http:

        def client_credentials(client: str) -> str:
            form = {"grant_type": "client_credentials", "scope": f"{AUDIENCE}/.default"}
            response = http.post(issuer.token_url(CONTOSO_TENANT), data=form, auth=(client, f"{client}-secret"))
            return str(response.json()["access_token"])

        def call(bearer: str) -> int:
            return http.post(sidecar.proxy + "/automation", headers={"Authorization": f"Bearer {bearer}"}).status_code

        assert call(client_credentials("payroll-app")) == 200
        assert call(client_credentials("reporting-app")) == 403  # an app of the tenant, but not this one
        # A user signed in through the listed app: its token names the app in azp, but it is a user's token.
        assert call(token(issuer, azp="payroll-app", idtyp="user", scp="Flows.Run")) == 403
