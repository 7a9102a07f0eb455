"""Conformance: one row per token recipe -> the status and `reason` label the sidecar answers with.

Every row runs the proxy's own decision (`decide()`: path, route, bearer token, verification, authorization) against
the policy in tests/support/conformance.py. Together the rows cover every reason of the fixed set that a request
head can produce, every rule kind, and the known attacks on JWT verifiers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sidecar.reasons import LIMIT_REASONS, Reason, outcome
from tests.support.conformance import APP_ID, NOW, World, entra, partner, signed
from tests.support.jwtkit import (
    b64url,
    ec_key,
    forge_hs256_with_public_pem,
    forge_unsigned,
    mint,
    rsa_key,
    strip_signature,
    swap_signature,
    tamper_payload,
    with_header,
)

LEEWAY = 60
ATTACKER = rsa_key("attacker")
ENTRA_KEY, PARTNER_KEY = rsa_key("entra-1"), ec_key("partner-1")
GOOD = signed(entra())
APP = signed(entra(scp=None, idtyp="app", roles=["Payroll.Invoke"]))  # client credentials: no scp, roles
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
DOWN = mint({"iss": "https://down.test", "aud": "api://down", "exp": NOW + 60}, rsa_key("down-1"))


@dataclass(frozen=True)
class Row:
    id: str
    path: str
    token: str | None
    status: int
    reason: str  # the `reason` label, or "allow"
    method: str = "GET"
    scheme: str = "Bearer"


def refused(id: str, path: str, token: str | None, reason: Reason, **extra: str) -> Row:
    return Row(id, path, token, outcome(reason).status, reason.value, **extra)


def allowed(id: str, path: str, token: str | None) -> Row:
    return Row(id, path, token, 200, "allow")


R = Reason
ROWS = [
    # the request itself
    refused("invalid_path-encoded-slash", "/any%2Fx", GOOD, R.INVALID_PATH),
    refused("no_route", "/nowhere", GOOD, R.NO_ROUTE),
    refused("method_not_allowed", "/methods", None, R.METHOD_NOT_ALLOWED, method="POST"),
    allowed("anyone-needs-no-token", "/public", None),
    refused("missing_token", "/any", None, R.MISSING_TOKEN),
    refused("missing_token-basic-scheme", "/any", "dXNlcjpwYXNz", R.MISSING_TOKEN, scheme="Basic"),
    # shape and size, refused before any key is used
    refused("malformed-garbage", "/any", "garbage", R.MALFORMED_TOKEN),
    refused("malformed-two-segments", "/any", strip_signature(GOOD, keep_dot=False), R.MALFORMED_TOKEN),
    refused("malformed-four-segments", "/any", GOOD + ".c2ln", R.MALFORMED_TOKEN),
    refused("malformed-five-segments-jwe", "/any", "a.b.c.d.e", R.MALFORMED_TOKEN),
    refused("malformed-oversized", "/any", signed(entra(pad="x" * 16_400)), R.MALFORMED_TOKEN),
    refused(
        "malformed-payload-not-json", "/any", GOOD.split(".")[0] + "." + b64url(b"{x") + ".c2ln", R.MALFORMED_TOKEN
    ),
    refused("malformed-exp-string", "/any", signed(entra(exp=str(NOW + 300))), R.MALFORMED_TOKEN),
    refused("malformed-missing-exp", "/any", signed(entra(exp=None)), R.MALFORMED_TOKEN),
    # keys named by the token are never fetched or trusted (RFC 8725 §3.10), nor unknown extensions
    refused("jku-header", "/any", signed(entra(), headers={"jku": "https://evil.test/k"}), R.MALFORMED_TOKEN),
    refused("x5u-header", "/any", signed(entra(), headers={"x5u": "https://evil.test/c"}), R.MALFORMED_TOKEN),
    refused(
        "jwk-header-embedded-key",
        "/any",
        mint(entra(), ATTACKER, headers={"jwk": ATTACKER.jwk()}),
        R.MALFORMED_TOKEN,
    ),
    refused("x5c-header", "/any", signed(entra(), headers={"x5c": ["MIIBIjAN"]}), R.MALFORMED_TOKEN),
    refused(
        "crit-unknown-extension", "/any", signed(entra(), headers={"crit": ["x-ext"], "x-ext": 1}), R.MALFORMED_TOKEN
    ),
    # algorithm confusion and downgrade
    refused("alg-none", "/any", forge_unsigned(entra(), "none", kid="entra-1"), R.FORBIDDEN_ALGORITHM),
    refused("alg-None", "/any", forge_unsigned(entra(), "None"), R.FORBIDDEN_ALGORITHM),
    refused("alg-nOnE", "/any", forge_unsigned(entra(), "nOnE"), R.FORBIDDEN_ALGORITHM),
    refused(
        "hs256-keyed-with-rsa-public-key",
        "/any",
        forge_hs256_with_public_pem(entra(), ENTRA_KEY),
        R.FORBIDDEN_ALGORITHM,
    ),
    refused("rs512-not-accepted", "/any", signed(entra(), alg="RS512"), R.FORBIDDEN_ALGORITHM),
    refused("es384-not-in-provider-list", "/any", mint(entra(), ec_key("p384", "P-384")), R.FORBIDDEN_ALGORITHM),
    # issuer: chosen by iss, never by trying keys
    refused("wrong_issuer-other", "/any", signed(entra(iss="https://evil.test/v2.0")), R.WRONG_ISSUER),
    refused("wrong_issuer-missing", "/any", signed(entra(iss=None)), R.WRONG_ISSUER),
    refused("wrong_issuer-other-tenant-tid", "/any", signed(entra(tid=OTHER_TENANT)), R.WRONG_ISSUER),
    refused(
        "wrong_issuer-provider-not-on-route",
        "/any",
        mint(partner(), PARTNER_KEY, headers={"typ": "at+jwt"}),
        R.WRONG_ISSUER,
    ),
    # keys
    refused("unknown_key", "/any", mint(entra(), ATTACKER), R.UNKNOWN_KEY),
    refused("kid-path-traversal", "/any", signed(entra(), kid="../../../../etc/passwd"), R.UNKNOWN_KEY),
    refused("kid-junk", "/any", signed(entra(), kid="\u0000' OR 1=1 --" + "x" * 2000), R.UNKNOWN_KEY),
    refused("keys_unavailable-issuer-never-reached", "/down", DOWN, R.KEYS_UNAVAILABLE),
    # signatures
    refused("bad_signature-stripped", "/any", strip_signature(GOOD), R.BAD_SIGNATURE),
    refused("bad_signature-swapped", "/any", swap_signature(GOOD, signed(entra(oid="someone-else"))), R.BAD_SIGNATURE),
    refused("bad_signature-tampered-payload", "/any", tamper_payload(GOOD, oid="admin"), R.BAD_SIGNATURE),
    refused("bad_signature-attacker-key-real-kid", "/any", mint(entra(), ATTACKER, kid="entra-1"), R.BAD_SIGNATURE),
    refused("bad_signature-alg-swapped-in-header", "/any", with_header(GOOD, alg="PS256"), R.BAD_SIGNATURE),
    # time, with 60 s leeway on each edge
    refused("expired", "/any", signed(entra(exp=NOW - 3600)), R.EXPIRED),
    refused("expired-at-leeway-edge", "/any", signed(entra(exp=NOW - LEEWAY)), R.EXPIRED),
    allowed("exp-inside-leeway", "/any", signed(entra(exp=NOW - LEEWAY + 1))),
    refused("not_yet_valid-future-iat", "/any", signed(entra(iat=NOW + LEEWAY + 1)), R.NOT_YET_VALID),
    refused("not_yet_valid-nbf-past-leeway", "/any", signed(entra(nbf=NOW + LEEWAY + 1)), R.NOT_YET_VALID),
    allowed("nbf-at-leeway-edge", "/any", signed(entra(nbf=NOW + LEEWAY))),
    # audience and type
    refused("wrong_audience", "/any", signed(entra(aud="api://someone-else")), R.WRONG_AUDIENCE),
    refused("wrong_token_type-plain-jwt", "/partner", mint(partner(), PARTNER_KEY), R.WRONG_TOKEN_TYPE),
    allowed("typ-at+jwt", "/partner", mint(partner(), PARTNER_KEY, headers={"typ": "at+jwt"})),
    # Entra v1 and v2
    allowed("entra-v2", "/any", GOOD),
    allowed("entra-v1", "/any", signed(entra("1.0"))),
    allowed("entra-v1-app-id-audience", "/any", signed(entra("1.0", aud=APP_ID))),
    # rules: users, apps, scopes, groups, claims, user or app tokens only
    allowed("users-listed-oid", "/users", GOOD),
    refused("not_allowed-users-other-oid", "/users", signed(entra(oid="someone-else")), R.NOT_ALLOWED),
    allowed("apps-client-credentials", "/apps", APP),
    allowed("apps-v1-appid-no-scp", "/apps", signed(entra("1.0", scp=None))),
    refused("not_allowed-apps-delegated-token", "/apps", GOOD, R.NOT_ALLOWED),
    refused("not_allowed-apps-other-client", "/apps", signed(entra(scp=None, azp="client-2")), R.NOT_ALLOWED),
    allowed("delegated-with-scope", "/delegated", signed(entra(scp="User.Read Payroll.Run"))),
    refused("not_allowed-delegated-without-scope", "/delegated", GOOD, R.NOT_ALLOWED),
    refused("not_allowed-delegated-app-token", "/delegated", APP, R.NOT_ALLOWED),
    allowed("groups-member", "/groups", signed(entra(groups=["g-0", "g-1"]))),
    refused("not_allowed-groups-overage", "/groups", signed(entra(_claim_names={"groups": "src1"})), R.NOT_ALLOWED),
    allowed("roles-app-role", "/roles", APP),
    refused("not_allowed-roles-missing", "/roles", GOOD, R.NOT_ALLOWED),
    # opaque tokens (RFC 7662)
    allowed("introspection-active", "/opaque", "opaque-active-token"),
    refused("token_inactive", "/opaque", "opaque-revoked-token", R.TOKEN_INACTIVE),
    refused("introspection_unavailable", "/opaque-down", "opaque-active-token", R.INTROSPECTION_UNAVAILABLE),
    allowed("mixed-route-jwt", "/mixed", GOOD),
    allowed("mixed-route-opaque", "/mixed", "opaque-active-token"),
    refused("malformed-opaque-without-introspection", "/any", "opaque-active-token", R.MALFORMED_TOKEN),
]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    world = World()
    world.idp.answers["opaque-active-token"] = {"active": True, "sub": "svc", "exp": NOW + 600}
    yield world
    world.close()


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_conformance(world: World, row: Row) -> None:
    decision = world.decide(row.path, row.token, row.method, row.scheme)
    reason = decision.reason.value if decision.reason is not None else "allow"
    status = outcome(decision.reason).status if decision.reason is not None else 200
    assert (status, reason) == (row.status, row.reason)


def test_the_table_is_big_and_covers_every_reason_a_request_head_can_get() -> None:
    assert len(ROWS) >= 40
    assert len({row.id for row in ROWS}) == len(ROWS)
    # Upstream failures happen after the decision: tests/integration covers them against a real dead upstream.
    head_reasons = set(Reason) - {Reason.UPSTREAM_UNREACHABLE, Reason.UPSTREAM_TIMEOUT}
    # Limits are checked around the decision, by the connection and the gate: tests/test_limits.py and
    # tests/integration/test_limits.py cover them with raw requests.
    head_reasons -= LIMIT_REASONS
    # Rate limits count after the decision, CORS preflights are answered before it: tests/test_ratelimit.py,
    # tests/test_cors.py and tests/integration/test_rate_cors.py cover them (a failing rate-limit store:
    # tests/integration/test_store_failures.py).
    head_reasons -= {Reason.RATE_LIMITED, Reason.RATE_LIMIT_UNAVAILABLE, Reason.CORS_REFUSED}
    # Forward-auth refuses a spoofed original before deciding: tests/integration/test_forward_auth.py covers it.
    head_reasons -= {Reason.FORWARD_AUTH_SPOOFED}
    # Only the admin listener's /metrics refuses a scrape for want of a turn: tests/integration/test_admin_attacks.py.
    head_reasons -= {Reason.METRICS_BUSY}
    assert head_reasons <= {Reason(row.reason) for row in ROWS if row.reason != "allow"}
