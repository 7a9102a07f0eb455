"""Provider kinds (issuer, entra, introspection), their refresh/staleness/hardening keys, and the app-caller rule
keys, as the loader resolves them, and every mistake as `FILE:LINE: path: message`."""

from __future__ import annotations

import pytest

from sidecar.policy.allow import authorize
from sidecar.policy.load import PolicyError, parse_policy
from sidecar.policy.model import CallerKind, Identity, Introspection, Policy

TID = "11111111-2222-3333-4444-555555555555"
ROUTE = "routes:\n  - name: a\n    match: {path: /a}\n    upstream: https://up.example.com/a\n    allow: ALLOW\n"
ISSUER = "  contoso:\n    issuer: https://login.example.com/t/v2.0\n    audiences: [api://app]\n"
ENTRA = f"  entra-co:\n    entra: {{tenant: {TID}}}\n    audiences: [api://app]\n"
OPAQUE = (
    "  opaque:\n    introspection:\n      endpoint: https://idp.example.com/introspect\n"
    "      client_id: sidecar\n      client_secret: ${SECRET}\n"
)
ENV = {"SECRET": "s3cret-value-9f8e"}


def text(providers: str = ISSUER, allow: str = "[{provider: contoso}]") -> str:
    return "version: 1\nproviders:\n" + providers + ROUTE.replace("ALLOW", allow)


def parse(source: str) -> Policy:
    return parse_policy(source, "p.yaml", ENV)


def errors(source: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse(source)
    return caught.value.errors


# --- what loads -------------------------------------------------------------------------------------------------


def test_defaults_for_refresh_staleness_and_size() -> None:
    provider = parse(text()).providers["contoso"]
    assert (provider.jwks_refresh_min, provider.jwks_refresh_max, provider.max_stale) == (300.0, 3600.0, 86400.0)
    assert (provider.require_typ, provider.max_token_bytes, provider.introspection) == (None, 16384, None)
    assert provider.issuers == {"https://login.example.com/t/v2.0"} and not provider.entra


def test_refresh_staleness_and_hardening_keys() -> None:
    extra = "    jwks_refresh: {min: 1m, max: 2h}\n    max_stale: 12h\n    require_typ: application/AT+JWT\n"
    provider = parse(text(ISSUER + extra + "    max_token_bytes: 8192\n")).providers["contoso"]
    assert (provider.jwks_refresh_min, provider.jwks_refresh_max, provider.max_stale) == (60.0, 7200.0, 43200.0)
    assert provider.require_typ == "at+jwt"  # compared case-insensitively, without "application/" (RFC 7515)
    assert provider.max_token_bytes == 8192


def test_introspection_provider() -> None:
    policy = parse(text(OPAQUE + "    audiences: [api://app]\n", "[{provider: opaque}]"))
    provider = policy.providers["opaque"]
    assert provider.introspection == Introspection(
        "https://idp.example.com/introspect", "sidecar", ENV["SECRET"], 300.0, 10.0
    )
    assert provider.issuers == frozenset() and provider.audiences == {"api://app"}
    assert ENV["SECRET"] not in repr(provider)  # the secret never reaches a log line through a repr


def test_introspection_cache_times_and_optional_audiences() -> None:
    source = text(OPAQUE + "      cache: 1m\n      inactive_cache: 0s\n", "[{provider: opaque}]")
    policy = parse(source)
    provider = policy.providers["opaque"]
    assert policy.warnings == (
        "p.yaml:3: providers.opaque: no audiences: any active token is accepted, whatever resource it was issued for",
    )
    assert provider.introspection is not None
    assert (provider.introspection.cache, provider.introspection.inactive_cache) == (60.0, 0.0)
    assert provider.audiences == frozenset()


def test_introspection_bounds_default_and_configured() -> None:
    default = parse(text(OPAQUE, "[{provider: opaque}]")).providers["opaque"].introspection
    assert default is not None and (default.max_in_flight, default.max_waiting) == (64, 256)
    source = text(OPAQUE + "      max_in_flight: 8\n      max_waiting: 8\n", "[{provider: opaque}]")
    given = parse(source).providers["opaque"].introspection
    assert given is not None and (given.max_in_flight, given.max_waiting) == (8, 8)


def test_app_caller_rule_keys() -> None:
    allow = (
        "\n      - {provider: entra-co, apps: [client-1, client-2], app_tokens_only: true}"
        "\n      - {provider: entra-co, groups: [g-1], scopes: [Payroll.Run], user_tokens_only: true}"
    )
    route = parse(text(ENTRA, allow)).routes[0]
    assert not isinstance(route.allow, str)
    apps, users = route.allow  # type: ignore[misc]
    assert (apps.apps, apps.caller, apps.groups, apps.scopes) == (
        frozenset({"client-1", "client-2"}),
        CallerKind.APP,
        None,
        None,
    )
    assert (users.groups, users.scopes, users.caller) == (
        frozenset({"g-1"}),
        frozenset({"Payroll.Run"}),
        CallerKind.USER,
    )


# --- what does not --------------------------------------------------------------------------------------------------

ERRORS = {
    "jwt-key-on-introspection": (
        text(OPAQUE + "    jwks_uri: https://idp.example.com/keys\n", "[{provider: opaque}]"),
        "p.yaml:3: providers.opaque: jwks_uri: only for JWT providers (issuer or entra), not introspection",
    ),
    "audiences-required-for-jwt": (
        text("  contoso:\n    issuer: https://login.example.com/t/v2.0\n"),
        "p.yaml:3: providers.contoso: audiences is required: the aud values this sidecar's tokens carry",
    ),
    "refresh-min-above-max": (
        text(ISSUER + "    jwks_refresh: {min: 2h, max: 1h}\n"),
        "p.yaml:6: providers.contoso.jwks_refresh: min must not be more than max",
    ),
    "refresh-max-not-below-max-stale": (
        text(ISSUER + "    jwks_refresh: {max: 1h}\n    max_stale: 1h\n"),
        "p.yaml:3: providers.contoso: jwks_refresh.max must be less than max_stale, or good keys would expire "
        "between refreshes",
    ),
    "refresh-below-a-second": (
        text(ISSUER + "    jwks_refresh: {min: 500ms}\n"),
        "p.yaml:6: providers.contoso.jwks_refresh.min: must be at least 1s and at most 86400s",
    ),
    "token-size-too-small": (
        text(ISSUER + "    max_token_bytes: 100\n"),
        "p.yaml:6: providers.contoso.max_token_bytes: Input should be greater than or equal to 1024",
    ),
    "typ-not-a-media-type": (
        text(ISSUER + "    require_typ: at jwt\n"),
        "p.yaml:6: providers.contoso.require_typ: must be a media type such as at+jwt",
    ),
    "introspection-over-http": (
        text(OPAQUE.replace("https://idp", "http://idp"), "[{provider: opaque}]"),
        "p.yaml:5: providers.opaque.introspection.endpoint: must be an https URL (http only for a loopback host: "
        "localhost, 127.0.0.0/8, ::1)",
    ),
    "introspection-without-secret": (
        text(OPAQUE.replace("      client_secret: ${SECRET}\n", ""), "[{provider: opaque}]"),
        "p.yaml:4: providers.opaque.introspection.client_secret: is required",
    ),
    "introspection-waiting-below-in-flight": (
        text(OPAQUE + "      max_in_flight: 16\n      max_waiting: 8\n", "[{provider: opaque}]"),
        "p.yaml:4: providers.opaque.introspection: max_waiting must be at least max_in_flight: every call in flight "
        "has a request waiting",
    ),
    "introspection-no-calls": (
        text(OPAQUE + "      max_in_flight: 0\n", "[{provider: opaque}]"),
        "p.yaml:8: providers.opaque.introspection.max_in_flight: Input should be greater than or equal to 1",
    ),
    "two-kinds": (
        text(ISSUER + "    entra: {tenant: " + TID + "}\n"),
        "p.yaml:3: providers.contoso: needs exactly one of issuer, entra or introspection",
    ),
    "user-and-app-tokens-only": (
        text(ENTRA, "[{provider: entra-co, user_tokens_only: true, app_tokens_only: true}]"),
        "p.yaml:10: routes[0].allow[0]: user_tokens_only and app_tokens_only exclude each other: no token is both",
    ),
    "scopes-with-app-tokens-only": (
        text(ENTRA, "[{provider: entra-co, scopes: [a], app_tokens_only: true}]"),
        "p.yaml:10: routes[0].allow[0]: scopes never match app tokens (client credentials carry roles, never scp): "
        "use claims.roles",
    ),
    "scope-with-space": (
        text(ENTRA, "[{provider: entra-co, scopes: ['a b']}]"),
        "p.yaml:10: routes[0].allow[0].scopes[0]: a scope never contains a space: list each scope as its own item",
    ),
    "apps-empty": (
        text(ENTRA, "[{provider: entra-co, apps: []}]"),
        "p.yaml:10: routes[0].allow[0].apps: must not be empty",
    ),
    "groups-null": (
        text(ENTRA, "\n      - provider: entra-co\n        groups:"),
        "p.yaml:12: routes[0].allow[0].groups: must not be empty (omit the key instead)",
    ),
    "caller-kind-needs-entra": (
        text(ISSUER, "[{provider: contoso, app_tokens_only: true}]"),
        'p.yaml:10: routes[0].allow[0].app_tokens_only: provider "contoso" is not Microsoft Entra: only Entra '
        "says reliably whether a token is an app's (idtyp, or no scp); match apps by `apps` or by a claim instead",
    ),
    "two-introspection-providers-on-a-route": (
        text(OPAQUE + OPAQUE.replace("opaque", "opaque2"), "[{provider: opaque}, {provider: opaque2}]"),
        "p.yaml:17: routes[0].allow: introspection providers opaque, opaque2 on one route: use one per route",
    ),
}


@pytest.mark.parametrize(("source", "message"), ERRORS.values(), ids=ERRORS.keys())
def test_errors(source: str, message: str) -> None:
    assert errors(source) == [message]


def test_no_error_echoes_the_secret() -> None:
    source = text(OPAQUE.replace("client_id: sidecar", "client_id: sidecar\n      cache: ${SECRET}"))
    found = errors(source.replace("[{provider: contoso}]", "[{provider: opaque}]"))
    assert found and not [error for error in found if ENV["SECRET"] in error]


UPPER = "AAAAAAAA-0000-4000-8000-00000000000A"


@pytest.mark.parametrize(
    ("key", "claims"),
    [("users", {"oid": UPPER.lower()}), ("apps", {"azp": UPPER.lower()}), ("groups", {"groups": [UPPER.lower()]})],
    ids=["users", "apps", "groups"],
)
def test_an_upper_case_guid_matches_entras_lower_case_claim(key: str, claims: dict[str, object]) -> None:
    """The portal may show a GUID in upper case; Entra's tokens carry it in lower case."""
    route = parse(text(ENTRA, f"[{{provider: entra-co, {key}: [{UPPER}]}}]")).routes[0]
    assert authorize(route, Identity("entra-co", claims, 0)) is not None


def test_guids_keep_their_case_on_other_providers() -> None:
    """Another issuer's `sub` may be case-sensitive: only Entra's ids are known to be lower-case GUIDs."""
    route = parse(text(ISSUER, f"[{{provider: contoso, users: [{UPPER}]}}]")).routes[0]
    assert authorize(route, Identity("contoso", {"sub": UPPER.lower()}, 0)) is None
    assert authorize(route, Identity("contoso", {"sub": UPPER}, 0)) is not None


def test_cloud_and_authority_together_are_an_error() -> None:
    """`authority` replaces the cloud's hosts: a `cloud` beside it would be ignored without a word."""
    entra = f"  entra-co:\n    entra: {{tenant: {TID}, cloud: usgov, authority: http://127.0.0.1:9400}}\n"
    assert errors(text(entra + "    audiences: [api://app]\n", "[{provider: entra-co}]")) == [
        "p.yaml:4: providers.entra-co.entra: cloud and authority exclude each other: authority replaces every host "
        "of the cloud (the cloud would be ignored); keep one"
    ]
    alone = f"  entra-co:\n    entra: {{tenant: {TID}, authority: http://127.0.0.1:9400}}\n    audiences: [api://app]\n"
    assert parse(text(alone, "[{provider: entra-co}]")).providers["entra-co"].entra
