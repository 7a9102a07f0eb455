"""The `entra:` preset: each cloud's v1 and v2 issuers, keys from the cloud's discovery, `tid` pinned to the tenant,
audiences as App ID URI or bare application id, and the loopback-only authority override."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from sidecar.auth.keys import KeyStore
from sidecar.auth.verify import Verifier
from sidecar.policy.entra import app_id_audiences, endpoints
from sidecar.policy.load import PolicyError, parse_policy
from sidecar.policy.model import Provider
from sidecar.reasons import Reason, Rejection
from tests.support.jwtkit import FakeClock, FakeIssuer, claims, mint, rsa_key

TID = "11111111-2222-3333-4444-555555555555"
OTHER_TID = "99999999-8888-7777-6666-555555555555"
APP_ID = "6f1c2a9e-0d4b-4c1e-9a57-3b2f8e7d1c40"
NOW = 1_700_000_000
KEY = rsa_key("entra-1")


@pytest.mark.parametrize(
    ("cloud", "issuers", "discovery"),
    [
        (
            "public",
            {f"https://sts.windows.net/{TID}/", f"https://login.microsoftonline.com/{TID}/v2.0"},
            f"https://login.microsoftonline.com/{TID}/v2.0/.well-known/openid-configuration",
        ),
        (
            "usgov",
            {
                f"https://sts.windows.net/{TID}/",
                f"https://login.microsoftonline.us/{TID}/",
                f"https://login.microsoftonline.us/{TID}/v2.0",
            },
            f"https://login.microsoftonline.us/{TID}/v2.0/.well-known/openid-configuration",
        ),
        (
            "china",
            {
                f"https://sts.chinacloudapi.cn/{TID}/",
                f"https://login.partner.microsoftonline.cn/{TID}/v2.0",
                f"https://login.chinacloudapi.cn/{TID}/v2.0",
            },
            f"https://login.chinacloudapi.cn/{TID}/v2.0/.well-known/openid-configuration",
        ),
    ],
    ids=["public", "usgov", "china"],
)
def test_each_cloud_accepts_its_v1_and_v2_issuers(cloud: str, issuers: set[str], discovery: str) -> None:
    found = endpoints(TID, cloud)
    assert found.issuers == issuers
    assert found.discovery_url == discovery
    assert found.issuer in issuers and found.issuer.endswith("/v2.0")


def test_authority_override_shapes_both_issuers_on_one_base() -> None:
    found = endpoints(TID, "public", "http://127.0.0.1:9400")
    assert found.issuers == {f"http://127.0.0.1:9400/{TID}/", f"http://127.0.0.1:9400/{TID}/v2.0"}
    assert found.discovery_url == f"http://127.0.0.1:9400/{TID}/v2.0/.well-known/openid-configuration"


@pytest.mark.parametrize(
    ("listed", "accepted"),
    [
        ([APP_ID], {APP_ID, f"api://{APP_ID}"}),
        ([APP_ID.upper()], {APP_ID.upper(), APP_ID, f"api://{APP_ID}"}),
        (["api://trigger-gateway"], {"api://trigger-gateway"}),
        (["api://trigger-gateway", APP_ID], {"api://trigger-gateway", APP_ID, f"api://{APP_ID}"}),
    ],
    ids=["app-id-gets-default-uri", "app-id-lowercased", "uri-alone", "both"],
)
def test_audiences_take_the_app_id_or_its_uri(listed: list[str], accepted: set[str]) -> None:
    assert app_id_audiences(listed) == accepted


# --- the loader -------------------------------------------------------------------------------------------------


def policy(entra: str, audiences: str = f"[{APP_ID}]") -> str:
    return (
        "version: 1\nproviders:\n  contoso:\n"
        f"    entra: {entra}\n    audiences: {audiences}\n"
        "routes:\n  - name: a\n    match: {path: /a}\n    upstream: https://up.example.com/a\n"
        "    allow: [{provider: contoso}]\n"
    )


def load(entra: str) -> Provider:
    return parse_policy(policy(entra), "p.yaml", {}).providers["contoso"]


def test_preset_resolves_issuers_discovery_tenant_and_audiences() -> None:
    provider = load(f"{{tenant: {TID.upper()}, cloud: usgov}}")
    assert provider.tenant == TID  # tokens carry tid lower-case
    assert provider.issuers == endpoints(TID, "usgov").issuers
    assert provider.discovery_url == endpoints(TID, "usgov").discovery_url
    assert provider.audiences == {APP_ID, f"api://{APP_ID}"}
    assert provider.entra


def test_plain_issuer_on_an_entra_host_counts_as_entra() -> None:
    text = policy("x").replace("    entra: x\n", f"    issuer: https://login.microsoftonline.com/{TID}/v2.0\n")
    assert parse_policy(text, "p.yaml", {}).providers["contoso"].entra


@pytest.mark.parametrize(
    ("entra", "message"),
    [
        ("{tenant: contoso.onmicrosoft.com}", "providers.contoso.entra.tenant: must be the tenant id"),
        ("{tenant: common}", "providers.contoso.entra.tenant: must be the tenant id"),
        (f"{{tenant: {TID}, cloud: germany}}", "providers.contoso.entra.cloud: must be 'public', 'usgov' or 'china'"),
        (
            f"{{tenant: {TID}, authority: 'https://login.example.com'}}",
            "providers.contoso.entra.authority: must be a loopback URL",
        ),
        ("{cloud: public}", "providers.contoso.entra.tenant: is required"),
        (f"{{tenant: {TID}, region: eu}}", 'providers.contoso.entra.region: unknown key "region"'),
    ],
    ids=["domain-name", "multi-tenant", "unknown-cloud", "authority-not-loopback", "no-tenant", "unknown-key"],
)
def test_preset_errors(entra: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(policy(entra), "p.yaml", {})
    assert [error.split(": ", 1)[1] for error in caught.value.errors][0].startswith(message), caught.value.errors


def test_preset_and_issuer_exclude_each_other() -> None:
    text = policy(f"{{tenant: {TID}}}").replace(
        "    audiences:", "    issuer: https://login.example.com/t\n    audiences:"
    )
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml", {})
    assert caught.value.errors == ["p.yaml:3: providers.contoso: needs exactly one of issuer, entra or introspection"]


# --- verification ---------------------------------------------------------------------------------------------------


@pytest.fixture
def public() -> FakeIssuer:
    """Entra's public cloud for tenant TID, behind a mock transport: discovery at the login host."""
    return FakeIssuer(KEY, issuer=f"https://login.microsoftonline.com/{TID}/v2.0")


@pytest.fixture
async def verifier(public: FakeIssuer) -> AsyncIterator[Verifier]:
    provider = load(f"{{tenant: {TID}}}")
    async with public.client() as client:
        yield Verifier({"contoso": provider}, KeyStore(client, FakeClock()), clock=FakeClock(NOW))


def v1(**changes: Any) -> str:
    """A v1 access token as Entra issues it: sts issuer, App ID URI audience, appid, upn."""
    base = {"iss": f"https://sts.windows.net/{TID}/", "aud": f"api://{APP_ID}", "tid": TID, "ver": "1.0"}
    return mint(claims(now=NOW, **{**base, "appid": "client-1", "upn": "lisa@contoso.com", **changes}), KEY)


def v2(**changes: Any) -> str:
    """A v2 access token: login-host issuer, bare application id audience, azp, preferred_username."""
    base = {"iss": f"https://login.microsoftonline.com/{TID}/v2.0", "aud": APP_ID, "tid": TID, "ver": "2.0"}
    return mint(
        claims(now=NOW, **{**base, "azp": "client-1", "preferred_username": "lisa@contoso.com", **changes}), KEY
    )


@pytest.mark.parametrize(
    "token",
    [v1(), v2(), v1(aud=APP_ID), v2(aud=f"api://{APP_ID}"), v2(tid=TID.upper())],
    ids=["v1", "v2", "v1-with-app-id-audience", "v2-with-uri-audience", "tid-case-insensitive"],
)
async def test_v1_and_v2_tokens_of_the_tenant_verify(verifier: Verifier, token: str) -> None:
    identity = await verifier.verify(token, frozenset({"contoso"}))
    assert identity.provider == "contoso" and identity.tenant is not None
    assert identity.app == "client-1" and identity.user == "lisa@contoso.com"


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (v2(tid=OTHER_TID), Reason.WRONG_ISSUER),
        (v2(tid=None), Reason.WRONG_ISSUER),
        (v2(tid=["x"]), Reason.WRONG_ISSUER),
        (v2(iss=f"https://login.microsoftonline.com/{OTHER_TID}/v2.0", tid=OTHER_TID), Reason.WRONG_ISSUER),
        (v1(iss=f"https://sts.windows.net/{TID}"), Reason.WRONG_ISSUER),
        (v2(iss=f"https://login.microsoftonline.us/{TID}/v2.0"), Reason.WRONG_ISSUER),
        (v2(iss=f"https://login.microsoftonline.com/{TID}/"), Reason.WRONG_ISSUER),
        (v2(aud="api://someone-else"), Reason.WRONG_AUDIENCE),
        (v1(aud=f"api://{OTHER_TID}"), Reason.WRONG_AUDIENCE),
    ],
    ids=[
        "tid-of-another-tenant",
        "tid-missing",
        "tid-not-a-string",
        "other-tenant-issuer",
        "v1-issuer-without-trailing-slash",
        "usgov-issuer-on-public-provider",
        "v1-shape-on-login-host",
        "other-audience",
        "other-app-uri",
    ],
)
async def test_tokens_outside_the_tenant_are_refused(verifier: Verifier, token: str, reason: Reason) -> None:
    with pytest.raises(Rejection) as caught:
        await verifier.verify(token, frozenset({"contoso"}))
    assert caught.value.reason is reason


async def test_china_discovery_may_name_the_partner_host(public: FakeIssuer) -> None:
    china = FakeIssuer(KEY, issuer=f"https://login.chinacloudapi.cn/{TID}/v2.0")
    china.discovery["issuer"] = f"https://login.partner.microsoftonline.cn/{TID}/v2.0"
    provider = load(f"{{tenant: {TID}, cloud: china}}")
    async with china.client() as client:
        verifier = Verifier({"contoso": provider}, KeyStore(client, FakeClock()), clock=FakeClock(NOW))
        for issuer in (china.discovery["issuer"], f"https://sts.chinacloudapi.cn/{TID}/"):
            token = mint(claims(now=NOW, iss=issuer, aud=APP_ID, tid=TID), KEY)
            assert (await verifier.verify(token, frozenset({"contoso"}))).provider == "contoso"


async def test_discovery_naming_another_tenant_is_refused(public: FakeIssuer) -> None:
    public.discovery["issuer"] = f"https://login.microsoftonline.com/{OTHER_TID}/v2.0"
    provider = load(f"{{tenant: {TID}}}")
    async with public.client() as client:
        keys = KeyStore(client, FakeClock())
        await keys.prime([provider])
        assert not keys.ready([provider])
        assert "is not the configured issuer" in (keys.last_error(provider) or "")


async def test_loopback_authority_serves_tests_and_local_proxies() -> None:
    local = FakeIssuer(KEY, issuer=f"http://127.0.0.1:9400/{TID}/v2.0")
    provider = load(f"{{tenant: {TID}, authority: 'http://127.0.0.1:9400/'}}")
    async with local.client() as client:
        verifier = Verifier({"contoso": provider}, KeyStore(client, FakeClock()), clock=FakeClock(NOW))
        for issuer in (f"http://127.0.0.1:9400/{TID}/", f"http://127.0.0.1:9400/{TID}/v2.0"):
            token = mint(claims(now=NOW, iss=issuer, aud=APP_ID, tid=TID), KEY)
            assert (await verifier.verify(token, frozenset({"contoso"}))).provider == "contoso"
    assert httpx.URL(local.requests[0]).path == f"/{TID}/v2.0/.well-known/openid-configuration"
