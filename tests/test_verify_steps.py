"""The verifier's steps as `sidecar explain` and `sidecar test` show them: for a token (or hand-written claims), each
check in order, whether it held and what it compared, ending at the check that refused. An operator reads these to
learn why a caller was refused, so each step must name the right check, the right verdict and the right values.
Also: an Entra `tid` is compared without regard to case, and an introspected identity keeps only the claims the
policy's rules can read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sidecar.auth.introspect import Introspector
from sidecar.auth.keys import KeyStore
from sidecar.auth.steps import NOT_A_JWT, Step
from sidecar.auth.verify import Verifier
from sidecar.policy.load import parse_policy
from sidecar.policy.model import Identity, Policy
from sidecar.reasons import Reason, Rejection
from tests.support.jwtkit import (
    AUDIENCE,
    ISSUER,
    FakeClock,
    FakeIntrospection,
    FakeIssuer,
    claims,
    mint,
    rsa_key,
    tamper_payload,
)

NOW = 1_700_000_000
TID = "abcdef01-2345-4789-abcd-ef0123456789"  # letters in it: a tid in capitals is the same tenant
OTHER_TID = "99999999-8888-4777-8666-555555555555"
V1 = f"https://sts.windows.net/{TID}/"
V2 = f"https://login.microsoftonline.com/{TID}/v2.0"
APP = "6f1c2a9e-0d4b-4c1e-9a57-3b2f8e7d1c40"
ENTRA_KEY, MAIN_KEY, TYPED_KEY = rsa_key("entra-1"), rsa_key("main-1"), rsa_key("typed-1")
ENDPOINT = "https://idp.test/oauth2/introspect"

POLICY = f"""
version: 1
providers:
  contoso:
    entra: {{tenant: {TID}}}
    audiences: [{APP}]
  main:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
  typed:
    issuer: https://typed.test
    audiences: [api://typed]
    require_typ: at+jwt
  opaque:
    introspection: {{endpoint: '{ENDPOINT}', client_id: sidecar, client_secret: s3cret}}
    audiences: [api://opaque]
routes:
  - name: all
    match: {{path: /all}}
    upstream: https://up.test/
    allow: [{{provider: contoso}}, {{provider: main}}, {{provider: opaque}}]
"""
ALL = frozenset({"contoso", "main", "opaque"})
JWT_ONLY = frozenset({"contoso", "main"})

# What the issuer step says this route accepts: every issuer of each JWT provider, by provider name, sorted; the
# introspection provider has no issuer and is not listed.
ACCEPTS = f"this route accepts contoso: {V2}, {V1}; main: {ISSUER}"
FORMAT_OK = Step("format", True, "three base64url segments, JSON header and payload")
ALGORITHM_OK = Step("algorithm", True, "alg 'RS256'; accepted: ES256, PS256, RS256")
SIGNATURE_OK = Step("signature", True, "verified with the issuer's key")
ENTRA_AUDIENCES = f"accepted: {APP}, api://{APP}"
LIFETIME_OK = Step(
    "lifetime",
    True,
    "exp 2023-11-14T22:18:20Z (in 300 s), nbf 2023-11-14T22:13:20Z (in 0 s), iat 2023-11-14T22:13:20Z (in 0 s)"
    " (leeway 60 s)",
)


def fresh(policy: Policy, client: httpx.AsyncClient, introspector: bool = True) -> Verifier:
    """A verifier of `policy` with empty caches (and, when told, no introspection client)."""
    clock = FakeClock(NOW)
    return Verifier(
        policy.providers,
        KeyStore(client, FakeClock()),
        clock,
        introspector=Introspector(client, clock) if introspector else None,
    )


@dataclass
class World:
    policy: Policy
    client: httpx.AsyncClient
    main: FakeIssuer
    idp: FakeIntrospection
    verifier: Verifier

    def fresh(self, introspector: bool = True) -> Verifier:
        return fresh(self.policy, self.client, introspector)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    entra, main, idp = (
        FakeIssuer(ENTRA_KEY, issuer=V2),
        FakeIssuer(MAIN_KEY, issuer=ISSUER),
        FakeIntrospection(ENDPOINT),
    )
    typed = FakeIssuer(TYPED_KEY, issuer="https://typed.test")
    idp.answers["opaque-good"] = {"active": True, "sub": "s", "aud": "api://opaque", "exp": NOW + 300}
    hosts = {"login.microsoftonline.com": entra.handle, "issuer.test": main.handle, "idp.test": idp.handle}
    hosts["typed.test"] = typed.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        return await hosts[request.url.host](request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
        policy = parse_policy(POLICY, "policy.yaml", {})
        yield World(policy, client, main, idp, fresh(policy, client))


def entra(**changes: Any) -> str:
    return mint(claims(now=NOW, **{"iss": V1, "aud": APP, "tid": TID, **changes}), ENTRA_KEY)


def plain(**changes: Any) -> str:
    return mint(claims(now=NOW, **changes), MAIN_KEY)


def size_ok(token: str) -> Step:
    return Step("size", True, f"{len(token)} characters, ASCII; at most 16384 ASCII characters accepted")


def issuer_ok(iss: str) -> Step:
    return Step("issuer", True, f"iss '{iss}'; {ACCEPTS}")


def up_to_the_key(token: str) -> list[Step]:
    """The steps of a token of `main` before its key is looked up, all held."""
    return [size_ok(token), FORMAT_OK, issuer_ok(ISSUER), ALGORITHM_OK]


async def traced(verifier: Verifier, token: str, allowed: frozenset[str] = ALL) -> tuple[Identity | Reason, list[Step]]:
    """What verification gave (the identity, or the reason of the refusal) and the steps it showed."""
    trace: list[Step] = []
    try:
        return await verifier.verify(token, allowed, trace), trace
    except Rejection as rejection:
        return rejection.reason, trace


def traced_claims(
    verifier: Verifier, given: dict[str, Any], allowed: frozenset[str] = ALL
) -> tuple[Identity | Reason, list[Step]]:
    trace: list[Step] = []
    try:
        return verifier.check_claims(given, allowed, trace), trace
    except Rejection as rejection:
        return rejection.reason, trace


async def test_an_accepted_entra_token_shows_every_check_and_its_tid_may_be_in_capitals(world: World) -> None:
    token = entra(tid=TID.upper())
    identity, steps = await traced(world.verifier, token)
    assert isinstance(identity, Identity) and identity.provider == "contoso"
    assert identity.claims["tid"] == TID.upper() and identity.claims["iss"] == V1
    assert steps == [
        size_ok(token),
        FORMAT_OK,
        issuer_ok(V1),
        ALGORITHM_OK,
        Step("key", True, "kid 'entra-1' published by the issuer"),
        SIGNATURE_OK,
        Step("audience", True, f"aud '{APP}'; {ENTRA_AUDIENCES}"),
        Step("tenant", True, f"tid '{TID.upper()}'; required: {TID}"),
        LIFETIME_OK,
    ]


async def test_an_accepted_plain_token_has_no_tenant_step(world: World) -> None:
    token = plain()
    identity, steps = await traced(world.verifier, token)
    assert isinstance(identity, Identity) and identity.provider == "main"
    assert steps == [
        *up_to_the_key(token),
        Step("key", True, "kid 'main-1' published by the issuer"),
        SIGNATURE_OK,
        Step("audience", True, f"aud '{AUDIENCE}'; accepted: {AUDIENCE}"),
        LIFETIME_OK,
    ]


async def test_a_bad_signature_ends_at_the_signature_and_its_repeat_says_it_was_refused_before(world: World) -> None:
    token = tamper_payload(plain(), sub="admin")
    assert await traced(world.verifier, token) == (
        Reason.BAD_SIGNATURE,
        [
            *up_to_the_key(token),
            Step("key", True, "kid 'main-1' published by the issuer"),
            Step("signature", False, "does not verify with the issuer's key"),
        ],
    )
    assert await traced(world.verifier, token) == (
        Reason.BAD_SIGNATURE,
        [Step("signature", False, "refused before with the same key")],
    )


@pytest.mark.parametrize(
    ("token", "reason", "last"),
    [
        (
            entra(aud="api://someone-else"),
            Reason.WRONG_AUDIENCE,
            Step("audience", False, f"aud 'api://someone-else'; {ENTRA_AUDIENCES}"),
        ),
        (
            entra(exp=None),
            Reason.MALFORMED_TOKEN,
            Step("claims", False, f"aud '{APP}'; {ENTRA_AUDIENCES}; exp missing"),
        ),
        (
            entra(tid=OTHER_TID),
            Reason.WRONG_ISSUER,
            Step("tenant", False, f"tid '{OTHER_TID}'; required: {TID}"),
        ),
        (
            entra(exp=NOW - 3600),
            Reason.EXPIRED,
            Step(
                "lifetime",
                False,
                "exp 2023-11-14T21:13:20Z (3600 s ago), nbf 2023-11-14T22:13:20Z (in 0 s),"
                " iat 2023-11-14T22:13:20Z (in 0 s) (leeway 60 s)",
            ),
        ),
    ],
    ids=["audience", "claims", "tenant", "lifetime"],
)
async def test_a_refusal_after_the_signature_ends_at_its_check(
    world: World, token: str, reason: Reason, last: Step
) -> None:
    """Every check before the refusing one held, and the refusing one says what it compared."""
    refused, steps = await traced(world.verifier, token)
    assert refused is reason
    assert steps[-1] == last
    assert [step.name for step in steps[:-1] if not step.ok] == []
    assert [step.name for step in steps[:6]] == ["size", "format", "issuer", "algorithm", "key", "signature"]


async def test_refusals_before_the_signature_end_at_their_check(world: World) -> None:
    oversized = plain(pad="x" * 17_000)
    assert await traced(world.verifier, oversized) == (
        Reason.MALFORMED_TOKEN,
        [Step("size", False, f"{len(oversized)} characters, ASCII; at most 16384 ASCII characters accepted")],
    )
    assert await traced(world.verifier, "not-a-jwt", JWT_ONLY) == (
        Reason.MALFORMED_TOKEN,
        [size_ok("not-a-jwt"), Step("format", False, NOT_A_JWT)],
    )
    own_key = mint(claims(now=NOW), MAIN_KEY, headers={"jku": "https://evil.test/keys"})
    assert await traced(world.verifier, own_key) == (
        Reason.MALFORMED_TOKEN,
        [
            size_ok(own_key),
            Step(
                "format",
                False,
                "the header names its own key (jku, x5u, jwk, x5c) or crit, "
                "or alg, kid or the payload is not of the JSON type required",
            ),
        ],
    )
    stranger = mint(claims(now=NOW), rsa_key("stranger"))
    assert await traced(world.verifier, stranger) == (
        Reason.UNKNOWN_KEY,
        [
            *up_to_the_key(stranger),
            Step("key", False, "kid 'stranger' is not published by the issuer (or does not fit the algorithm)"),
        ],
    )


async def test_the_issuers_keys_unavailable_end_at_the_key_check(world: World) -> None:
    world.main.status = 503
    token = plain()
    assert await traced(world.verifier, token) == (
        Reason.KEYS_UNAVAILABLE,
        [
            *up_to_the_key(token),
            Step("key", False, "the issuer's keys are not available (not fetched, or too old to trust)"),
        ],
    )


async def test_a_required_typ_shows_the_type_check(world: World) -> None:
    typed = frozenset({"typed"})
    issuer = Step("issuer", True, "iss 'https://typed.test'; this route accepts typed: https://typed.test")
    token = mint(claims(now=NOW, iss="https://typed.test", aud="api://typed"), TYPED_KEY, headers={"typ": "at+jwt"})
    identity, steps = await traced(world.verifier, token, typed)
    assert isinstance(identity, Identity) and identity.provider == "typed"
    assert steps[:5] == [
        size_ok(token),
        FORMAT_OK,
        issuer,
        ALGORITHM_OK,
        Step("type", True, "typ 'at+jwt'; required: at+jwt"),
    ]
    untyped = mint(claims(now=NOW, iss="https://typed.test", aud="api://typed"), TYPED_KEY)
    assert await traced(world.verifier, untyped, typed) == (
        Reason.WRONG_TOKEN_TYPE,
        [size_ok(untyped), FORMAT_OK, issuer, ALGORITHM_OK, Step("type", False, "typ 'JWT'; required: at+jwt")],
    )


async def test_an_opaque_token_shows_what_the_introspection_provider_said(world: World) -> None:
    assert await traced(world.verifier, "opaque-good") == (
        (await world.fresh().verify("opaque-good", ALL)),
        [size_ok("opaque-good"), Step("introspection", True, "not a JWT: opaque says it is active")],
    )
    assert await traced(world.verifier, "opaque-revoked") == (
        Reason.TOKEN_INACTIVE,
        [size_ok("opaque-revoked"), Step("introspection", False, "not a JWT: asked opaque: token_inactive")],
    )
    foreign = mint(claims(now=NOW, iss="https://elsewhere.test"), rsa_key("elsewhere"))
    assert await traced(world.verifier, foreign) == (
        Reason.TOKEN_INACTIVE,
        [
            size_ok(foreign),
            FORMAT_OK,
            Step(
                "introspection",
                False,
                "its iss is none of this route's JWT issuers: asked opaque: token_inactive",
            ),
        ],
    )


async def test_without_an_introspection_client_an_opaque_token_is_introspection_unavailable(world: World) -> None:
    assert await traced(world.fresh(introspector=False), "opaque-good") == (
        Reason.INTROSPECTION_UNAVAILABLE,
        [size_ok("opaque-good"), Step("introspection", False, "no introspection client")],
    )
    assert world.idp.calls == []


# --- hand-written claims (`sidecar explain --claims`, `sidecar test`) -----------------------------------------------


def test_hand_written_claims_are_completed_and_go_through_the_checks_but_the_signature(world: World) -> None:
    identity, steps = traced_claims(world.verifier, {"oid": "lisa"}, frozenset({"contoso", "opaque"}))
    assert isinstance(identity, Identity) and identity.provider == "contoso"
    assert dict(identity.claims) == {"oid": "lisa", "iss": V2, "aud": APP, "tid": TID, "exp": NOW + 3600}
    assert identity.expires_at == NOW + 3600
    assert steps == [
        Step("issuer", True, f"iss '{V2}'; this route accepts contoso: {V2}, {V1}"),
        Step("audience", True, f"aud '{APP}'; {ENTRA_AUDIENCES}"),
        Step("tenant", True, f"tid '{TID}'; required: {TID}"),
        Step("lifetime", True, "exp 2023-11-14T23:13:20Z (in 3600 s) (leeway 60 s)"),
    ]


def test_hand_written_claims_are_refused_with_the_reason_a_token_would_get(world: World) -> None:
    assert traced_claims(world.verifier, {"oid": "lisa", "exp": 0}, frozenset({"main"})) == (
        Reason.EXPIRED,
        [
            Step("issuer", True, f"iss '{ISSUER}'; this route accepts main: {ISSUER}"),
            Step("audience", True, f"aud '{AUDIENCE}'; accepted: {AUDIENCE}"),
            Step("lifetime", False, f"exp 1970-01-01T00:00:00Z ({NOW} s ago) (leeway 60 s)"),
        ],
    )
    assert traced_claims(world.verifier, {"oid": "lisa", "tid": OTHER_TID}, frozenset({"contoso"}))[0] is (
        Reason.WRONG_ISSUER
    )
    assert traced_claims(world.verifier, {"oid": "lisa", "aud": "api://x"}, frozenset({"main"}))[0] is (
        Reason.WRONG_AUDIENCE
    )


def test_the_issuer_step_names_every_issuer_the_route_accepts(world: World) -> None:
    """Without `iss` and two JWT providers on the route nothing is filled in: refused as a missing issuer."""
    assert traced_claims(world.verifier, {"oid": "lisa"}) == (
        Reason.WRONG_ISSUER,
        [Step("issuer", False, f"iss None; {ACCEPTS}")],
    )
    assert traced_claims(world.verifier, {"oid": "lisa", "iss": 42}) == (
        Reason.MALFORMED_TOKEN,
        [Step("issuer", False, f"iss 42; {ACCEPTS}")],
    )
    assert traced_claims(world.verifier, {"iss": "https://evil.test"}, frozenset({"opaque"})) == (
        Reason.WRONG_ISSUER,
        [Step("issuer", False, "iss 'https://evil.test'; this route accepts no JWT issuer")],
    )


@pytest.mark.parametrize("iss", [["x"], {"x": 1}, 42], ids=["list", "object", "number"])
def test_hand_written_claims_with_an_iss_that_is_not_a_string_are_malformed_not_a_crash(
    world: World, iss: object
) -> None:
    """`sidecar explain --claims '{"iss": ["x"]}'` answered with a traceback (TypeError in handclaims)."""
    assert traced_claims(world.verifier, {"oid": "lisa", "iss": iss}) == (
        Reason.MALFORMED_TOKEN,
        [Step("issuer", False, f"iss {iss!r}; {ACCEPTS}")],
    )


@pytest.mark.parametrize(
    ("read", "kept"),
    [
        ({"opaque": frozenset({"sub", "department"})}, {"sub", "department"}),
        ({}, {"sub", "roles", "aud", "exp"}),  # a provider no rule reads claims of: what the sidecar itself reads
        (None, {"sub", "roles", "department", "email", "aud", "exp"}),  # explain: every claim
    ],
    ids=["named-by-rules", "provider-not-named", "every-claim"],
)
async def test_an_introspected_identity_keeps_only_the_claims_the_rules_read(
    world: World, read: dict[str, frozenset[str]] | None, kept: set[str]
) -> None:
    world.idp.answers["opaque-rich"] = {
        "active": True,
        "sub": "s",
        "roles": ["r"],
        "department": "payroll",
        "email": "lisa@contoso.com",
        "aud": "api://opaque",
        "exp": NOW + 300,
    }
    clock = FakeClock(NOW)
    keys = KeyStore(world.client, FakeClock())
    verifier = Verifier(
        world.policy.providers, keys, clock, introspector=Introspector(world.client, clock), claims=read
    )
    identity = await verifier.verify("opaque-rich", ALL)
    assert set(identity.claims) == kept
