"""The world of the conformance suite: one policy with every kind of provider and rule, its issuers behind mock
transports, tokens minted from session keys, and `decide()` run on request heads as the proxy runs it.

Providers: `contoso` (the Entra preset, tenant TID, on a loopback authority), `partner` (a plain issuer that requires
`typ: at+jwt`, ES256), `down` (an issuer that never answers), `opaque` / `opaque_down` (RFC 7662 endpoints, one
that answers and one that fails). Each route exercises one rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

import httpx

from sidecar.auth.introspect import Introspector
from sidecar.auth.keys import KeyStore
from sidecar.auth.verify import Verifier
from sidecar.edge.decide import Decision, decide
from sidecar.edge.runtime import Snapshot
from sidecar.policy.load import parse_policy
from sidecar.policy.model import Policy
from tests.support.jwtkit import FakeClock, FakeIntrospection, FakeIssuer, claims, ec_key, mint, rsa_key

__all__ = ["APP_ID", "NOW", "OID", "TID", "World", "entra", "partner"]

T = TypeVar("T")

NOW: Final = 1_700_000_000
TID: Final = "11111111-2222-3333-4444-555555555555"
APP_ID: Final = "6f1c2a9e-0d4b-4c1e-9a57-3b2f8e7d1c40"
OID: Final = "aaaaaaaa-0000-0000-0000-00000000000a"
AUTHORITY: Final = "http://127.0.0.1:9400"
CONTOSO_V2: Final = f"{AUTHORITY}/{TID}/v2.0"
CONTOSO_V1: Final = f"{AUTHORITY}/{TID}/"
PARTNER: Final = "https://partner.test"
ENTRA_KEY, PARTNER_KEY = rsa_key("entra-1"), ec_key("partner-1")

POLICY: Final = f"""\
version: 1
providers:
  contoso:
    entra: {{tenant: {TID}, authority: '{AUTHORITY}'}}
    audiences: [{APP_ID}]
  partner:
    issuer: {PARTNER}
    audiences: [api://partner]
    algorithms: [ES256]
    require_typ: at+jwt
  down:
    issuer: https://down.test
    audiences: [api://down]
  opaque:
    introspection: {{endpoint: 'https://idp.test/introspect', client_id: sidecar, client_secret: s3cret}}
  opaque_down:
    introspection: {{endpoint: 'https://idp-down.test/introspect', client_id: sidecar, client_secret: s3cret}}
routes:
  - {{name: public, match: {{path: /public}}, upstream: 'https://up.test/', allow: anyone}}
  - {{name: any, match: {{path: /any}}, upstream: 'https://up.test/', allow: [{{provider: contoso}}]}}
  - {{name: methods, match: {{path: /methods, methods: [GET]}}, upstream: 'https://up.test/', allow: anyone}}
  - name: users
    match: {{path: /users}}
    upstream: https://up.test/
    allow: [{{provider: contoso, users: ['{OID}']}}]
  - name: apps
    match: {{path: /apps}}
    upstream: https://up.test/
    allow: [{{provider: contoso, apps: [client-1], app_tokens_only: true}}]
  - name: delegated
    match: {{path: /delegated}}
    upstream: https://up.test/
    allow: [{{provider: contoso, scopes: [Payroll.Run], user_tokens_only: true}}]
  - name: groups
    match: {{path: /groups}}
    upstream: https://up.test/
    allow: [{{provider: contoso, groups: [g-1]}}]
  - name: roles
    match: {{path: /roles}}
    upstream: https://up.test/
    allow: [{{provider: contoso, claims: {{roles: Payroll.Invoke}}}}]
  - {{name: partner, match: {{path: /partner}}, upstream: 'https://up.test/', allow: [{{provider: partner}}]}}
  - {{name: down, match: {{path: /down}}, upstream: 'https://up.test/', allow: [{{provider: down}}]}}
  - {{name: opaque, match: {{path: /opaque}}, upstream: 'https://up.test/', allow: [{{provider: opaque}}]}}
  - name: opaque-down
    match: {{path: /opaque-down}}
    upstream: https://up.test/
    allow: [{{provider: opaque_down}}]
  - name: mixed
    match: {{path: /mixed}}
    upstream: https://up.test/
    allow: [{{provider: contoso}}, {{provider: opaque}}]
"""


def entra(version: str = "2.0", **changes: Any) -> dict[str, Any]:
    """Claims of a contoso access token: v2 (login-host issuer, app id audience, azp) or v1 (sts-shaped issuer,
    App ID URI audience, appid). A delegated (user) token unless told otherwise: it has scp."""
    if version == "1.0":
        base = {"iss": CONTOSO_V1, "aud": f"api://{APP_ID}", "appid": "client-1", "upn": "lisa@contoso.com"}
    else:
        base = {"iss": CONTOSO_V2, "aud": APP_ID, "azp": "client-1", "preferred_username": "lisa@contoso.com"}
    return claims(now=NOW, **{**base, "tid": TID, "ver": version, "oid": OID, "scp": "User.Read", **changes})


def partner(**changes: Any) -> dict[str, Any]:
    return claims(now=NOW, **{"iss": PARTNER, "aud": "api://partner", **changes})


class World:
    """The issuers, the policy and a snapshot to decide with, on an event loop of its own (so that property tests,
    which are synchronous, can use it too). Close it when done."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.contoso = FakeIssuer(ENTRA_KEY, issuer=CONTOSO_V2)
        self.partner = FakeIssuer(PARTNER_KEY, issuer=PARTNER)
        self.down = FakeIssuer(rsa_key("down-1"), issuer="https://down.test")
        self.down.error = httpx.ConnectError("refused")
        self.idp = FakeIntrospection("https://idp.test/introspect")
        self.idp_down = FakeIntrospection("https://idp-down.test/introspect")
        self.idp_down.status = 500
        self.client = httpx.AsyncClient(transport=httpx.MockTransport(self._handle))
        self.policy: Policy = parse_policy(POLICY, "conformance.yaml", {})
        clock = FakeClock(NOW)
        keys = KeyStore(self.client, FakeClock())
        introspector = Introspector(self.client, clock)
        self.snapshot = Snapshot(
            self.policy, Verifier(self.policy.providers, keys, clock, introspector=introspector), "test"
        )

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        by_host = {"127.0.0.1": self.contoso, "partner.test": self.partner, "down.test": self.down}
        issuer = by_host.get(request.url.host)
        if issuer is not None:
            return await issuer.handle(request)
        return await (self.idp if request.url.host == "idp.test" else self.idp_down).handle(request)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def decide(self, path: str, token: str | None, method: str = "GET", scheme: str = "Bearer") -> Decision:
        headers = [] if token is None else [(b"authorization", f"{scheme} {token}".encode())]
        return self.run(decide(self.snapshot, method, path.encode(), headers))

    def verify(self, token: str, providers: frozenset[str]) -> object:
        return self.run(self.snapshot.verifier.verify(token, providers))

    def close(self) -> None:
        self.run(self.client.aclose())
        self.loop.close()


def signed(payload: dict[str, Any], **options: Any) -> str:
    return mint(payload, ENTRA_KEY, **options)
