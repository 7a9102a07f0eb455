"""The demo issuer: Entra-shaped discovery, JWKS and client-credentials tokens that pyjwt verifies."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Mapping
from importlib import resources
from typing import Any

import httpx
import jwt
import pytest

from sidecar.demo.cast import demo_clients
from sidecar.demo.issuer import CONTOSO_TENANT, FABRIKAM_TENANT, DemoClient, DemoIssuer
from sidecar.policy.load import parse_policy

BASE_URL = "http://issuer.test"
AUDIENCE = "api://trigger-gateway"
SCOPE = f"{AUDIENCE}/.default"
# Whole seconds, close to the real time, so iat/exp are exact and pyjwt's own exp check still passes.
NOW = float(int(time.time()))
CLIENTS = {client.client_id: client for client in demo_clients()}


@pytest.fixture(scope="module")
def issuer() -> DemoIssuer:
    return DemoIssuer(BASE_URL, demo_clients(), clock=lambda: NOW)


@pytest.fixture
async def http(issuer: DemoIssuer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app()), base_url=BASE_URL) as client:
        yield client


def credentials(client_id: str, scope: str | None = SCOPE) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": CLIENTS[client_id].client_secret,
    }
    if scope is not None:
        form["scope"] = scope
    return form


async def request_token(http: httpx.AsyncClient, tenant: str, form: Mapping[str, str], **kwargs: Any) -> httpx.Response:
    return await http.post(f"/{tenant}/oauth2/v2.0/token", data=dict(form), **kwargs)


async def issue(http: httpx.AsyncClient, client_id: str) -> str:
    response = await request_token(http, CLIENTS[client_id].tenant, credentials(client_id))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def verify(http: httpx.AsyncClient, tenant: str, token: str, audience: str = AUDIENCE) -> dict[str, Any]:
    """Verify as a relying party would: discovery, then the JWKS it names, then the key the token's kid names."""
    discovery = (await http.get(f"/{tenant}/v2.0/.well-known/openid-configuration")).json()
    jwks = (await http.get(discovery["jwks_uri"])).json()
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [key for key in jwks["keys"] if key["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=audience, issuer=discovery["issuer"]
    )
    return claims


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@pytest.mark.parametrize("tenant", [CONTOSO_TENANT, FABRIKAM_TENANT], ids=["contoso", "fabrikam"])
async def test_discovery_names_the_tenants_issuer_jwks_and_token_endpoint(
    http: httpx.AsyncClient, issuer: DemoIssuer, tenant: str
) -> None:
    response = await http.get(f"/{tenant}/v2.0/.well-known/openid-configuration")

    assert response.status_code == 200
    assert response.json() == {
        "issuer": f"{BASE_URL}/{tenant}/v2.0",
        "jwks_uri": f"{BASE_URL}/{tenant}/discovery/v2.0/keys",
        "token_endpoint": f"{BASE_URL}/{tenant}/oauth2/v2.0/token",
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    }
    assert issuer.issuer_url(tenant) == f"{BASE_URL}/{tenant}/v2.0"
    assert issuer.token_url(tenant) == f"{BASE_URL}/{tenant}/oauth2/v2.0/token"


async def test_jwks_publishes_only_public_rsa_signing_keys(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/{CONTOSO_TENANT}/discovery/v2.0/keys")

    assert response.status_code == 200
    [key] = response.json()["keys"]
    assert set(key) == {"kty", "use", "alg", "kid", "n", "e"}
    assert (key["kty"], key["use"], key["alg"]) == ("RSA", "sig", "RS256")
    assert jwt.PyJWK(key).key.key_size == 2048


async def test_each_tenant_signs_with_its_own_key(http: httpx.AsyncClient) -> None:
    contoso = (await http.get(f"/{CONTOSO_TENANT}/discovery/v2.0/keys")).json()["keys"]
    fabrikam = (await http.get(f"/{FABRIKAM_TENANT}/discovery/v2.0/keys")).json()["keys"]

    assert {key["kid"] for key in contoso}.isdisjoint(key["kid"] for key in fabrikam)


@pytest.mark.parametrize(
    "path",
    ["/nowhere/v2.0/.well-known/openid-configuration", "/nowhere/discovery/v2.0/keys"],
    ids=["discovery", "jwks"],
)
async def test_unknown_tenant_metadata_is_not_found(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)

    assert response.status_code == 404
    assert response.json()["error"] == "invalid_tenant"


@pytest.mark.parametrize("client_id", list(CLIENTS), ids=list(CLIENTS))
async def test_issued_token_verifies_against_served_jwks_and_carries_the_clients_claims(
    http: httpx.AsyncClient, client_id: str
) -> None:
    client = CLIENTS[client_id]
    token = await issue(http, client_id)

    claims = await verify(http, client.tenant, token)

    assert claims == {
        **client.claims,
        "iss": f"{BASE_URL}/{client.tenant}/v2.0",
        "aud": AUDIENCE,
        "sub": client.claims["oid"],
        "tid": client.tenant,
        "azp": client_id,
        "appid": client_id,
        "ver": "2.0",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 3600,
    }
    assert jwt.get_unverified_header(token)["typ"] == "JWT"


@pytest.mark.parametrize(
    ("client_id", "expected"),
    [
        ("lisa", {"upn": "lisa@contoso.com", "preferred_username": "lisa@contoso.com", "idtyp": "user"}),
        ("tom", {"upn": "tom@contoso.com", "idtyp": "user"}),
        ("payroll-app", {"roles": ["Payroll.Invoke"], "idtyp": "app"}),
        ("reporting-app", {"idtyp": "app"}),
        ("eve", {"upn": "eve@fabrikam.com", "idtyp": "user", "tid": FABRIKAM_TENANT}),
    ],
    ids=["lisa", "tom", "payroll-app", "reporting-app", "eve"],
)
async def test_demo_cast_tokens_carry_the_identities_the_walkthrough_relies_on(
    http: httpx.AsyncClient, client_id: str, expected: dict[str, object]
) -> None:
    claims = await verify(http, CLIENTS[client_id].tenant, await issue(http, client_id))

    assert claims.items() >= expected.items()
    assert claims["oid"] == claims["sub"]
    assert ("roles" in claims) == (client_id == "payroll-app")


async def test_token_response_is_a_bearer_token_that_must_not_be_cached(http: httpx.AsyncClient) -> None:
    response = await request_token(http, CONTOSO_TENANT, credentials("lisa"))

    body = response.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert response.headers["cache-control"] == "no-store"


async def test_token_lifetime_sets_expires_in_and_exp() -> None:
    issuer = DemoIssuer(BASE_URL, demo_clients(), token_lifetime=60, clock=time.time)  # NOW may be > 60 s ago
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app()), base_url=BASE_URL) as http:
        response = await request_token(http, CONTOSO_TENANT, credentials("tom"))
        claims = await verify(http, CONTOSO_TENANT, response.json()["access_token"])

    assert response.json()["expires_in"] == 60
    assert claims["exp"] - claims["iat"] == 60


async def test_client_secret_basic_issues_a_token(http: httpx.AsyncClient) -> None:
    form = {"grant_type": "client_credentials", "scope": SCOPE}

    response = await request_token(http, CONTOSO_TENANT, form, headers={"Authorization": basic("tom", "tom-secret")})

    assert response.status_code == 200, response.text
    assert (await verify(http, CONTOSO_TENANT, response.json()["access_token"]))["azp"] == "tom"


async def test_client_secret_basic_credentials_are_form_decoded() -> None:
    client = DemoClient("odd:app", "sec ret:%", CONTOSO_TENANT, {})
    issuer = DemoIssuer(BASE_URL, [client], clock=lambda: NOW)
    authorization = basic("odd%3Aapp", "sec+ret%3A%25")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app()), base_url=BASE_URL) as http:
        form = {"grant_type": "client_credentials", "scope": SCOPE}
        response = await request_token(http, CONTOSO_TENANT, form, headers={"Authorization": authorization})

    assert response.status_code == 200, response.text


def without(form: Mapping[str, str], name: str) -> dict[str, str]:
    return {key: value for key, value in form.items() if key != name}


LISA = credentials("lisa")
TOKEN_ERRORS = [
    ("unknown-tenant", "nowhere", LISA, None, 404, "invalid_tenant"),
    ("wrong-grant-type", CONTOSO_TENANT, {**LISA, "grant_type": "password"}, None, 400, "unsupported_grant_type"),
    ("missing-grant-type", CONTOSO_TENANT, without(LISA, "grant_type"), None, 400, "unsupported_grant_type"),
    ("unknown-client", CONTOSO_TENANT, {**LISA, "client_id": "mallory"}, None, 401, "invalid_client"),
    ("wrong-secret", CONTOSO_TENANT, {**LISA, "client_secret": "lisa-secreT"}, None, 401, "invalid_client"),
    ("missing-secret", CONTOSO_TENANT, without(LISA, "client_secret"), None, 401, "invalid_client"),
    ("client-of-another-tenant", FABRIKAM_TENANT, LISA, None, 401, "invalid_client"),
    ("missing-scope", CONTOSO_TENANT, without(LISA, "scope"), None, 400, "invalid_scope"),
    ("scope-not-default", CONTOSO_TENANT, {**LISA, "scope": f"{AUDIENCE}/read"}, None, 400, "invalid_scope"),
    ("scope-only-default", CONTOSO_TENANT, {**LISA, "scope": "/.default"}, None, 400, "invalid_scope"),
    (
        "basic-wrong-secret",
        CONTOSO_TENANT,
        without(LISA, "client_secret"),
        basic("lisa", "nope"),
        401,
        "invalid_client",
    ),
    ("basic-not-base64", CONTOSO_TENANT, without(LISA, "client_secret"), "Basic !!!", 401, "invalid_client"),
    ("basic-without-colon", CONTOSO_TENANT, without(LISA, "client_secret"), "Basic bGlzYQ==", 401, "invalid_client"),
    ("other-auth-scheme", CONTOSO_TENANT, without(LISA, "client_secret"), "Bearer abc", 401, "invalid_client"),
    ("basic-and-post", CONTOSO_TENANT, LISA, basic("lisa", "lisa-secret"), 400, "invalid_request"),
]


@pytest.mark.parametrize(
    ("tenant", "form", "authorization", "status", "error"),
    [row[1:] for row in TOKEN_ERRORS],
    ids=[row[0] for row in TOKEN_ERRORS],
)
async def test_token_endpoint_refuses_like_entra(
    http: httpx.AsyncClient, tenant: str, form: dict[str, str], authorization: str | None, status: int, error: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = await request_token(http, tenant, form, headers=headers)

    assert response.status_code == status
    assert response.json()["error"] == error
    assert "access_token" not in response.json()
    assert "lisa-secret" not in response.text


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        ("grant_type=client_credentials", "application/json"),
        ("grant_type=client_credentials&grant_type=client_credentials", "application/x-www-form-urlencoded"),
        ("x=" + "a" * 20_000, "application/x-www-form-urlencoded"),
        (b"grant_type=\xff", "application/x-www-form-urlencoded"),
    ],
    ids=["not-a-form", "repeated-parameter", "too-large", "not-utf8"],
)
async def test_malformed_token_request_is_invalid_request(
    http: httpx.AsyncClient, content: str | bytes, content_type: str
) -> None:
    response = await http.post(
        f"/{CONTOSO_TENANT}/oauth2/v2.0/token", content=content, headers={"Content-Type": content_type}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_rotation_publishes_new_and_previous_key_and_signs_with_the_new_one() -> None:
    issuer = DemoIssuer(BASE_URL, demo_clients(), clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app()), base_url=BASE_URL) as http:
        old_token = await issue(http, "lisa")
        old_kid = jwt.get_unverified_header(old_token)["kid"]

        issuer.rotate(CONTOSO_TENANT)
        new_token = await issue(http, "lisa")
        new_kid = jwt.get_unverified_header(new_token)["kid"]
        published = [key["kid"] for key in (await http.get(f"/{CONTOSO_TENANT}/discovery/v2.0/keys")).json()["keys"]]

        assert new_kid != old_kid
        assert published == [new_kid, old_kid]
        # Tokens signed before the rotation keep verifying until they expire.
        assert (await verify(http, CONTOSO_TENANT, old_token))["azp"] == "lisa"
        assert (await verify(http, CONTOSO_TENANT, new_token))["azp"] == "lisa"


async def test_second_rotation_retires_the_oldest_key_and_leaves_other_tenants_alone() -> None:
    issuer = DemoIssuer(BASE_URL, demo_clients(), clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app()), base_url=BASE_URL) as http:
        first = jwt.get_unverified_header(issuer.mint(CONTOSO_TENANT, {}))["kid"]
        fabrikam_before = (await http.get(f"/{FABRIKAM_TENANT}/discovery/v2.0/keys")).json()

        issuer.rotate(CONTOSO_TENANT)
        issuer.rotate(CONTOSO_TENANT)

        published = [key["kid"] for key in (await http.get(f"/{CONTOSO_TENANT}/discovery/v2.0/keys")).json()["keys"]]
        assert len(published) == 2
        assert first not in published
        assert (await http.get(f"/{FABRIKAM_TENANT}/discovery/v2.0/keys")).json() == fabrikam_before


async def test_mint_fills_registered_claims_and_lets_the_caller_override_or_drop_them(
    http: httpx.AsyncClient, issuer: DemoIssuer
) -> None:
    token = issuer.mint(CONTOSO_TENANT, {"aud": AUDIENCE, "sub": "s", "nbf": int(NOW) - 5, "ver": None})

    claims = await verify(http, CONTOSO_TENANT, token)

    assert claims == {
        "iss": f"{BASE_URL}/{CONTOSO_TENANT}/v2.0",
        "aud": AUDIENCE,
        "sub": "s",
        "tid": CONTOSO_TENANT,
        "iat": int(NOW),
        "nbf": int(NOW) - 5,
        "exp": int(NOW) + 3600,
    }


def test_mint_for_an_unknown_tenant_is_an_error(issuer: DemoIssuer) -> None:
    with pytest.raises(ValueError, match="unknown demo tenant"):
        issuer.mint("nowhere", {})


async def test_client_extra_claims_cannot_override_protocol_claims() -> None:
    sneaky = DemoClient("sneaky", "s", CONTOSO_TENANT, {"iss": "https://evil.example", "aud": "x", "tid": "other"})
    issuer = DemoIssuer(BASE_URL, [sneaky], clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app()), base_url=BASE_URL) as http:
        form = {"grant_type": "client_credentials", "client_id": "sneaky", "client_secret": "s", "scope": SCOPE}
        response = await request_token(http, CONTOSO_TENANT, form)
        claims = await verify(http, CONTOSO_TENANT, response.json()["access_token"])

    assert (claims["iss"], claims["aud"], claims["tid"]) == (
        f"{BASE_URL}/{CONTOSO_TENANT}/v2.0",
        AUDIENCE,
        CONTOSO_TENANT,
    )


async def test_sub_is_a_stable_id_per_client_when_it_has_no_oid() -> None:
    client = DemoClient("plain", "s", CONTOSO_TENANT, {})
    form = {"grant_type": "client_credentials", "client_id": "plain", "client_secret": "s", "scope": SCOPE}
    subjects = []
    for _ in range(2):  # two issuers: the subject must not depend on the process's keys or state
        issuer = DemoIssuer(BASE_URL, [client], clock=lambda: NOW)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app()), base_url=BASE_URL) as http:
            response = await request_token(http, CONTOSO_TENANT, form)
            subjects.append((await verify(http, CONTOSO_TENANT, response.json()["access_token"]))["sub"])

    assert subjects[0] == subjects[1]
    assert len(subjects[0]) == 36


async def test_jwks_requests_counts_every_served_jwks() -> None:
    issuer = DemoIssuer(BASE_URL, demo_clients())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app()), base_url=BASE_URL) as http:
        await http.get(f"/{CONTOSO_TENANT}/discovery/v2.0/keys")
        await http.get(f"/{FABRIKAM_TENANT}/discovery/v2.0/keys")
        await http.get(f"/{CONTOSO_TENANT}/v2.0/.well-known/openid-configuration")

    assert issuer.jwks_requests == 2


def test_duplicate_client_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate demo client id 'lisa'"):
        DemoIssuer(BASE_URL, [*demo_clients(), DemoClient("lisa", "x", FABRIKAM_TENANT, {})])


def test_client_secret_stays_out_of_reprs() -> None:
    assert "lisa-secret" not in repr(CLIENTS["lisa"])


def test_demo_cast_spans_two_tenants_with_unique_object_ids() -> None:
    clients = demo_clients()

    assert {client.tenant for client in clients} == {CONTOSO_TENANT, FABRIKAM_TENANT}
    assert len({client.claims["oid"] for client in clients}) == len(clients)
    assert CLIENTS["eve"].tenant == FABRIKAM_TENANT


async def test_the_demo_policy_uses_the_entra_shape_and_the_demo_issuer_serves_what_it_reads() -> None:
    """demo.yaml's provider is `entra:` with `authority` (the shape an operator writes for a real tenant): its
    discovery URL, the issuer that document names and the tokens' `iss` and `tid` are the demo issuer's."""
    base = "http://127.0.0.1:9400"  # `authority` must be a loopback URL; no socket is opened here
    text = resources.files("sidecar.demo").joinpath("demo.yaml").read_text("utf-8")
    policy = parse_policy(text, "demo.yaml", {"DEMO_ISSUER": base, "DEMO_UPSTREAM": "http://127.0.0.1:9401"})
    provider = policy.providers["contoso"]
    assert provider.entra and provider.tenant == CONTOSO_TENANT
    assert provider.issuers == {f"{base}/{CONTOSO_TENANT}/", f"{base}/{CONTOSO_TENANT}/v2.0"}
    issuer = DemoIssuer(base, demo_clients())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=issuer.app()), base_url=base) as http:
        discovery = await http.get(provider.discovery_url)
        assert discovery.status_code == 200
        assert discovery.json()["issuer"] in provider.issuers
        keys = await http.get(discovery.json()["jwks_uri"])
        assert keys.status_code == 200 and keys.json()["keys"]
    claims = jwt.decode(issuer.mint(CONTOSO_TENANT, {"aud": AUDIENCE}), options={"verify_signature": False})
    assert claims["iss"] in provider.issuers and claims["tid"] == provider.tenant
