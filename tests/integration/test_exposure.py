"""What the sidecar exposes: admin endpoints only on the admin listener; no token material or unverified claim in
any response or log line, whichever way a request is refused (the canary test).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.support.jwtkit import forge_hs256_with_public_pem, forge_unsigned, mint, rsa_key, tamper_payload
from tests.support.rawhttp import RawResponse, request
from tests.support.servers import SidecarProcess, ThreadServer

pytestmark = pytest.mark.integration

POLICY = """\
version: 1
realm: exposure
providers:
  contoso:
    issuer: ${ISSUER}/11111111-2222-3333-4444-555555555555/v2.0
    audiences: [api://trigger-gateway]
  typed:
    issuer: ${ISSUER}/11111111-2222-3333-4444-555555555555/v2.0
    audiences: [api://typed]
    require_typ: at+jwt
routes:
  - name: protected
    match: { path: /protected }
    upstream: ${UPSTREAM}/protected
    allow: [{ provider: contoso, users: [nobody@contoso.com] }]
  - name: audited
    match: { path: /audited }
    upstream: ${UPSTREAM}/audited
    mode: audit
    allow: [{ provider: contoso, users: [nobody@contoso.com] }]
  - name: typed
    match: { path: /typed }
    upstream: ${UPSTREAM}/typed
    allow: [{ provider: typed }]
  - name: everything-else
    match: { path_prefix: / }
    upstream: ${UPSTREAM}/catchall
    allow: anyone
"""
AUD = "api://trigger-gateway"
ADMIN_PATHS = ["/metrics", "/healthz", "/readyz"]


@pytest.fixture(scope="module")
def exposed(
    tmp_path_factory: pytest.TempPathFactory, upstream: ThreadServer, issuer_server: tuple[DemoIssuer, ThreadServer]
) -> Iterator[SidecarProcess]:
    config: Path = tmp_path_factory.mktemp("exposure") / "exposure.yaml"
    config.write_text(POLICY)
    env = {"ISSUER": issuer_server[1].url, "UPSTREAM": upstream.url}
    process = SidecarProcess(
        config, env, ("--drain-delay", "0", "--forward-auth-path", "/_auth", "--forward-auth-ingress", "nginx")
    ).start()
    yield process
    assert process.stop() == 0


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_admin_paths_on_the_proxy_go_to_the_catch_all_route_not_the_sidecar(exposed: SidecarProcess, path: str) -> None:
    reply = httpx.get(exposed.proxy + path, timeout=30, trust_env=False)
    assert reply.status_code == 200
    assert reply.json()["path"] == "/catchall" + path  # the echo upstream answered
    assert "sidecar_" not in reply.text
    admin = httpx.get(exposed.admin + path, timeout=30, trust_env=False)
    assert admin.status_code == 200 and "body_sha256" not in admin.text  # the sidecar answered, not the echo
    if path == "/metrics":
        assert "sidecar_requests_total" in admin.text


@pytest.mark.parametrize("path", ADMIN_PATHS)
def test_admin_paths_on_the_proxy_without_a_route_are_404(client: httpx.Client, path: str) -> None:
    reply = client.get(path)
    assert reply.status_code == 404
    assert reply.json()["reason"] == "no_route"


# ------------------------------------------------------------------------------------------------- the canary


class Canary:
    """Distinctive values planted in tokens; none may come back in a response or show up in a log line."""

    def __init__(self) -> None:
        tag = secrets.token_hex(6).upper()
        self.values = {name: f"CANARY-{name.upper()}-{tag}" for name in ("upn", "sub", "oid", "azp", "name", "kid")}
        self.values.update(iss=f"https://canary-iss-{tag.lower()}.example", aud=f"api://canary-aud-{tag.lower()}")
        self.values.update(opaque=f"CANARYOPAQUE{tag}", signature=f"CANARYSIG{tag}", header=f"CANARY-HDR-{tag}")
        self.tokens: list[str] = []

    def claims(self, **overrides: object) -> dict[str, object]:
        """Every claim a canary, for tokens that never verify."""
        now = int(time.time())
        planted = {name: self.values[name] for name in ("upn", "sub", "oid", "azp", "name")}
        return {"iss": self.values["iss"], "aud": AUD, "iat": now, "nbf": now, "exp": now + 600, **planted, **overrides}

    def keep(self, token: str) -> str:
        self.tokens.append(token)
        return token

    def needles(self) -> list[str]:
        """The canaries, each token, and each of its segments: none may leak, in any form."""
        segments = [segment for token in self.tokens for segment in token.split(".") if len(segment) >= 16]
        return [*self.values.values(), *self.tokens, *segments]


def _tokens(canary: Canary, issuer: DemoIssuer) -> dict[str, tuple[str, str]]:
    """id -> (Authorization value, the path it is sent to). Each reaches one refusal path of the verifier."""
    v, c = canary.values, canary.claims
    stranger = rsa_key("canary-stranger")
    contoso = issuer.issuer_url(CONTOSO_TENANT)
    now = int(time.time())

    def demo(**claims: object) -> str:  # validly signed by the issuer; only the canaries that are never logged
        return issuer.mint(
            CONTOSO_TENANT, {"aud": AUD, "sub": "canary-subject", "upn": v["upn"], "name": v["name"], **claims}
        )

    tokens = {
        "opaque": v["opaque"],
        "alg-none": forge_unsigned(c(iss=contoso), kid=v["kid"]),
        "hs256-with-public-key": forge_hs256_with_public_pem(c(iss=contoso), stranger, kid=v["kid"]),
        "wrong-issuer": mint(c(), stranger, headers={"x-canary": v["header"]}),
        "unknown-key": mint(c(iss=contoso), stranger, kid=v["kid"], headers={"x-canary": v["header"]}),
        "claims-tampered": tamper_payload(demo(), **c(iss=contoso)),
        "signature-forged": demo().rsplit(".", 1)[0] + "." + v["signature"],
        "expired": demo(exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "not-yet-valid": demo(nbf=now + 3600),
        "wrong-audience": demo(aud=v["aud"]),
        "verified-not-allowed": demo(),
        "oversized": v["opaque"] + "A" * 17_000,
    }
    rows = {name: ("Bearer " + canary.keep(token), "/protected") for name, token in tokens.items()}
    rows["wrong-token-type"] = ("Bearer " + canary.keep(demo(aud="api://typed")), "/typed")
    rows["not-a-bearer-token"] = ("Bearer " + v["opaque"] + "!", "/protected")
    rows["other-scheme"] = ("Basic " + v["opaque"], "/protected")
    return rows


def _send(exposed: SidecarProcess, rid: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> RawResponse:
    return request(exposed.proxy, target, headers=[(b"X-Request-Id", rid.encode()), *headers])


def test_no_response_or_log_line_holds_token_material_or_an_unverified_claim(
    exposed: SidecarProcess, issuer: DemoIssuer
) -> None:
    canary = Canary()
    responses: dict[str, RawResponse] = {}
    for name, (authorization, path) in _tokens(canary, issuer).items():
        credential = [(b"Authorization", authorization.encode())]
        enforce = responses[f"{name}-enforce"] = _send(exposed, f"canary-{name}-1", path.encode(), credential)
        assert enforce.status in (400, 401, 403, 431), (name, enforce.status)
        if name != "verified-not-allowed":  # audit mode forwards a verified caller's identity: that is its job
            audited = responses[f"{name}-audit"] = _send(exposed, f"canary-{name}-2", b"/audited", credential)
            assert audited.status in (200, 400, 401, 431), (name, audited.status)  # forwarded: credentials only
        asked = [*credential, (b"X-Original-URI", path.encode()), (b"X-Original-Method", b"GET")]
        responses[f"{name}-forward-auth"] = _send(exposed, f"canary-{name}-3", b"/_auth", asked)
    token = canary.tokens[-1].encode()
    twice = [(b"Authorization", b"Bearer " + token), (b"Authorization", b"Bearer " + token)]
    responses["two-authorizations"] = _send(exposed, "canary-twice", b"/protected", twice)
    responses["token-in-query"] = _send(exposed, "canary-query", b"/protected?access_token=" + token, [])
    exposed.wait_for_log("request", request_id="canary-query")

    assert responses["verified-not-allowed-enforce"].status == 403  # the verified path was reached too
    assert responses["wrong-token-type-enforce"].json()["reason"] == "wrong_token_type"
    needles = canary.needles()
    leaked = [(name, n) for name, reply in responses.items() for n in needles if n.encode() in reply.raw]
    assert not leaked, leaked[:3]
    logged = [(line[:120], n) for line in exposed.lines for n in needles if n in line]
    assert not logged, logged[:3]
    reasons = {json.loads(reply.body).get("reason") for reply in responses.values() if reply.status in (401, 403)}
    assert {"malformed_token", "forbidden_algorithm", "wrong_issuer", "unknown_key", "bad_signature"} <= reasons
    assert {"expired", "not_yet_valid", "wrong_audience", "not_allowed", "missing_token"} <= reasons
