"""`sidecar explain` and the proxy decide alike: one table of tokens (Entra v1 and v2, one row per reason the
verifier can give) goes through the proxy's `decide()` and through `explain()`, which must reach the same decision
and show the verifier's own steps up to the one that decided."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sidecar.auth.introspect import Introspector
from sidecar.auth.keys import KeyStore
from sidecar.auth.verify import Verifier
from sidecar.cli.explain import explain
from sidecar.edge.decide import decide
from sidecar.edge.runtime import Snapshot
from sidecar.policy.load import parse_policy
from sidecar.policy.model import Policy
from sidecar.reasons import Reason, outcome
from tests.support.jwtkit import (
    FakeClock,
    FakeIntrospection,
    FakeIssuer,
    claims,
    forge_unsigned,
    mint,
    rsa_key,
    strip_signature,
    tamper_payload,
)

TID = "11111111-2222-3333-4444-555555555555"
OTHER_TID = "99999999-8888-7777-6666-555555555555"
APP_ID = "6f1c2a9e-0d4b-4c1e-9a57-3b2f8e7d1c40"
LISA = "aaaaaaaa-0000-0000-0000-00000000000a"
NOW = 1_700_000_000
KEY = rsa_key("entra-1")
V1_ISSUER = f"https://sts.windows.net/{TID}/"
V2_ISSUER = f"https://login.microsoftonline.com/{TID}/v2.0"
TYPED_ISSUER = "https://typed.test"
OPAQUE_ENDPOINT = "https://idp.test/oauth2/introspect"
DOWN_ISSUER = "https://down.test"

POLICY = f"""
version: 1
providers:
  contoso:
    entra: {{tenant: {TID}}}
    audiences: [{APP_ID}]
  typed:
    issuer: {TYPED_ISSUER}
    audiences: [api://typed]
    require_typ: at+jwt
  opaque:
    introspection: {{endpoint: {OPAQUE_ENDPOINT}, client_id: sidecar, client_secret: s3cret}}
    audiences: [api://opaque]
  down:
    issuer: {DOWN_ISSUER}
    audiences: [api://down]
routes:
  - name: down
    match: {{path: /down}}
    upstream: https://up.example.com/down
    allow: [{{provider: down}}]
  - name: payroll
    match: {{path: /payroll, methods: [POST]}}
    upstream: https://up.example.com/payroll?sig=secret
    allow:
      - provider: contoso
        users: [{LISA}]
  - name: typed
    match: {{path: /typed}}
    upstream: https://up.example.com/typed
    allow: [{{provider: typed}}]
  - name: opaque
    match: {{path: /opaque}}
    upstream: https://up.example.com/opaque
    allow: [{{provider: opaque}}]
"""


def v1(**changes: Any) -> str:
    """A v1 access token as Entra issues it: sts issuer, App ID URI audience, appid, upn."""
    base = {"iss": V1_ISSUER, "aud": f"api://{APP_ID}", "tid": TID, "ver": "1.0", "oid": LISA, "appid": "client-1"}
    return mint(claims(now=NOW, **{**base, **changes}), KEY)


def v2(**changes: Any) -> str:
    """A v2 access token: login-host issuer, bare application id audience, azp."""
    base = {"iss": V2_ISSUER, "aud": APP_ID, "tid": TID, "ver": "2.0", "oid": LISA, "azp": "client-1"}
    return mint(claims(now=NOW, **{**base, **changes}), KEY)


@dataclass(frozen=True)
class Row:
    id: str
    path: str
    token: str | None
    reason: Reason | None  # None: allowed
    step: str | None = None  # the verifier step that decided a token refusal


TYPED_KEY, DOWN_KEY = rsa_key("typed-1"), rsa_key("down-1")
ROWS = [
    Row("entra-v1-allowed", "/payroll", v1(), None),
    Row("entra-v2-allowed", "/payroll", v2(), None),
    Row("entra-v1-other-user", "/payroll", v1(oid="bbbbbbbb-0000-0000-0000-00000000000b"), Reason.NOT_ALLOWED),
    Row("missing_token", "/payroll", None, Reason.MISSING_TOKEN),
    Row("malformed_token-shape", "/payroll", "not-a-jwt", Reason.MALFORMED_TOKEN, "format"),
    Row("malformed_token-oversized", "/payroll", v2(pad="x" * 20_000), Reason.MALFORMED_TOKEN, "size"),
    Row("malformed_token-no-exp", "/payroll", v2(exp=None), Reason.MALFORMED_TOKEN, "claims"),
    Row(
        "malformed_token-jku",
        "/payroll",
        mint(claims(now=NOW), KEY, headers={"jku": "x"}),
        Reason.MALFORMED_TOKEN,
        "format",
    ),
    Row(
        "forbidden_algorithm",
        "/payroll",
        forge_unsigned(claims(now=NOW, iss=V2_ISSUER)),
        Reason.FORBIDDEN_ALGORITHM,
        "algorithm",
    ),
    Row(
        "wrong_issuer-iss",
        "/payroll",
        v2(iss=f"https://login.microsoftonline.com/{OTHER_TID}/v2.0"),
        Reason.WRONG_ISSUER,
        "issuer",
    ),
    Row("wrong_issuer-tid", "/payroll", v1(tid=OTHER_TID), Reason.WRONG_ISSUER, "tenant"),
    Row(
        "unknown_key",
        "/payroll",
        mint(claims(now=NOW, iss=V2_ISSUER, aud=APP_ID, tid=TID), rsa_key("stranger")),
        Reason.UNKNOWN_KEY,
        "key",
    ),
    Row("bad_signature", "/payroll", tamper_payload(v2(), oid="someone"), Reason.BAD_SIGNATURE, "signature"),
    Row("bad_signature-stripped", "/payroll", strip_signature(v1()), Reason.BAD_SIGNATURE, "signature"),
    Row("expired", "/payroll", v2(exp=NOW - 3600), Reason.EXPIRED, "lifetime"),
    Row("not_yet_valid", "/payroll", v1(nbf=NOW + 3600), Reason.NOT_YET_VALID, "lifetime"),
    Row("wrong_audience", "/payroll", v1(aud="api://someone-else"), Reason.WRONG_AUDIENCE, "audience"),
    Row(
        "wrong_token_type",
        "/typed",
        mint(claims(now=NOW, iss=TYPED_ISSUER, aud="api://typed"), TYPED_KEY),
        Reason.WRONG_TOKEN_TYPE,
        "type",
    ),
    Row(
        "typed-allowed",
        "/typed",
        mint(claims(now=NOW, iss=TYPED_ISSUER, aud="api://typed"), TYPED_KEY, headers={"typ": "at+jwt"}),
        None,
    ),
    Row("token_inactive", "/opaque", "opaque-revoked", Reason.TOKEN_INACTIVE, "introspection"),
    Row("opaque-active", "/opaque", "opaque-good", None),
    Row(
        "keys_unavailable",
        "/down",
        mint(claims(now=NOW, iss=DOWN_ISSUER, aud="api://down"), DOWN_KEY),
        Reason.KEYS_UNAVAILABLE,
        "key",
    ),
]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    entra, typed, opaque = (
        FakeIssuer(KEY, issuer=V2_ISSUER),
        FakeIssuer(TYPED_KEY, issuer=TYPED_ISSUER),
        FakeIntrospection(),
    )
    down = FakeIssuer(DOWN_KEY, issuer=DOWN_ISSUER)
    down.status = 503
    opaque.answers["opaque-good"] = {"active": True, "sub": "s", "aud": "api://opaque", "exp": NOW + 300}
    by_host = {"login.microsoftonline.com": entra.handle, "typed.test": typed.handle, "idp.test": opaque.handle}
    by_host["down.test"] = down.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        return await by_host[request.url.host](request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        yield http


@pytest.fixture
def policy() -> Policy:
    return parse_policy(POLICY, "policy.yaml", {})


async def proxy_decision(policy: Policy, client: httpx.AsyncClient, row: Row) -> Reason | None:
    keys = KeyStore(client, FakeClock())
    verifier = Verifier(policy.providers, keys, clock=FakeClock(NOW), introspector=Introspector(client, FakeClock(NOW)))
    headers = [(b"authorization", f"Bearer {row.token}".encode())] if row.token is not None else []
    method = "POST" if row.path == "/payroll" else "GET"
    return (await decide(Snapshot(policy, verifier, ""), method, row.path.encode(), headers)).reason


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_explain_decides_as_the_proxy(policy: Policy, client: httpx.AsyncClient, row: Row) -> None:
    proxy = await proxy_decision(policy, client, row)
    method = "POST" if row.path == "/payroll" else "GET"
    result = await explain(policy, method, row.path.encode(), row.token, None, client=client, clock=FakeClock(NOW))
    assert proxy is row.reason
    assert result.reason == (None if proxy is None else proxy.value)
    steps = [(step.name, step.ok) for step in result.token]
    if row.step is None:  # allowed, or refused by the rules: every step of the token held
        assert all(ok for _, ok in steps), steps
    else:  # the proxy stops at the first failing check, and explain shows that check last
        assert steps[-1] == (row.step, False), steps
        assert all(ok for _, ok in steps[:-1]), steps
    assert row.token is None or row.token not in json.dumps([step.detail for step in result.token])


@pytest.mark.parametrize(("token", "other"), [(v1(), V2_ISSUER), (v2(), V1_ISSUER)], ids=["v1", "v2"])
async def test_entra_steps_show_every_issuer_and_the_tenant(
    policy: Policy, client: httpx.AsyncClient, token: str, other: str
) -> None:
    result = await explain(policy, "POST", b"/payroll", token, None, client=client, clock=FakeClock(NOW))
    steps = {step.name: step for step in result.token}
    assert result.status == 200 and steps["issuer"].ok and other in steps["issuer"].detail
    assert steps["tenant"].ok and TID in steps["tenant"].detail
    assert [step.name for step in result.token] == [
        "size",
        "format",
        "issuer",
        "algorithm",
        "key",
        "signature",
        "audience",
        "tenant",
        "lifetime",
    ]


@pytest.mark.parametrize(
    ("given", "reason", "step"),
    [
        ({"oid": LISA}, None, None),
        ({"oid": LISA, "iss": V1_ISSUER, "aud": f"api://{APP_ID}"}, None, None),
        ({"oid": "someone-else"}, Reason.NOT_ALLOWED, None),
        ({"oid": LISA, "tid": OTHER_TID}, Reason.WRONG_ISSUER, "tenant"),
        ({"oid": LISA, "exp": 0}, Reason.EXPIRED, "lifetime"),
        ({"oid": LISA, "aud": "api://elsewhere"}, Reason.WRONG_AUDIENCE, "audience"),
        ({"oid": LISA, "iss": "https://evil.test"}, Reason.WRONG_ISSUER, "issuer"),
    ],
    ids=["v2-defaults", "v1-issuer", "other-user", "other-tenant", "expired", "other-audience", "other-issuer"],
)
async def test_claims_go_through_the_verifier_checks_but_the_signature(
    policy: Policy, client: httpx.AsyncClient, given: dict[str, Any], reason: Reason | None, step: str | None
) -> None:
    result = await explain(policy, "POST", b"/payroll", None, given, client=client, clock=FakeClock(NOW))
    assert result.reason == (None if reason is None else reason.value)
    names = [s.name for s in result.token]
    assert "signature" not in names and "key" not in names
    if step is not None:
        assert (result.token[-1].name, result.token[-1].ok) == (step, False)


def test_the_table_has_a_row_per_token_reason() -> None:
    """Every reason that answers 401 (the token's), the rules' 403 and the keys' 503."""
    token_reasons = {reason for reason in Reason if outcome(reason).status == 401}
    assert token_reasons | {Reason.NOT_ALLOWED, Reason.KEYS_UNAVAILABLE} <= {row.reason for row in ROWS}
