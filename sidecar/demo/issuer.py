"""A small, real OIDC token issuer shaped like Microsoft Entra ID, for `sidecar demo` and the integration tests.

It serves, per tenant, the discovery document, the JWKS and a client-credentials token endpoint at Entra's paths
(`/{tenant}/v2.0/.well-known/openid-configuration`, `/{tenant}/discovery/v2.0/keys`,
`/{tenant}/oauth2/v2.0/token`), and signs RS256 access tokens with one generated RSA key per tenant.

It is a demo and a test double, not an identity provider: the client secrets are constants, so whoever serves it
must bind loopback only (127.0.0.1). Nothing here logs a secret or a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote_plus

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

__all__ = [
    "CONTOSO_TENANT",
    "FABRIKAM_TENANT",
    "DemoClient",
    "DemoIssuer",
]

CONTOSO_TENANT: Final = "11111111-2222-3333-4444-555555555555"
FABRIKAM_TENANT: Final = "99999999-8888-7777-6666-555555555555"

_DEFAULT_SCOPE_SUFFIX: Final = "/.default"
_MAX_FORM_BYTES: Final = 16 * 1024  # a token request is a handful of short fields
# RFC 6749 §5.1: token responses must not be cached.
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class DemoClient:
    """A registered application: its credentials, its tenant and the extra claims its tokens carry."""

    client_id: str
    client_secret: str = field(repr=False)  # kept out of reprs so it never lands in a log line
    tenant: str
    claims: Mapping[str, object] = field(default_factory=dict)  # oid, upn, roles, idtyp, ...


class _TokenError(Exception):
    """A token request refused, in the shape of an OAuth 2.0 error response (RFC 6749 §5.2)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> JSONResponse:
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers=_NO_STORE)


@dataclass(frozen=True)
class _SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey
    jwk: Mapping[str, object]  # the public half, as published


def _new_signing_key() -> _SigningKey:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    # RFC 7638 thumbprint: a kid that is stable for the key and unique across rotations.
    canonical = json.dumps({"e": public["e"], "kty": "RSA", "n": public["n"]}, separators=(",", ":"), sort_keys=True)
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": public["n"], "e": public["e"]}
    return _SigningKey(kid=kid, private_key=private_key, jwk=jwk)


class DemoIssuer:
    """Issues Entra-shaped access tokens for a fixed set of clients; see the module docstring."""

    def __init__(
        self,
        base_url: str,
        clients: Sequence[DemoClient],
        token_lifetime: float = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._clients: dict[str, DemoClient] = {}
        for client in clients:
            if client.client_id in self._clients:
                raise ValueError(f"duplicate demo client id {client.client_id!r}")
            self._clients[client.client_id] = client
        self._token_lifetime = token_lifetime
        self._clock = clock
        # Current key first; after a rotation the previous key follows, as Entra keeps publishing it.
        self._keys: dict[str, list[_SigningKey]] = {c.tenant: [_new_signing_key()] for c in clients}
        self.jwks_requests = 0

    def issuer_url(self, tenant: str) -> str:
        return f"{self._base_url}/{tenant}/v2.0"

    def token_url(self, tenant: str) -> str:
        return f"{self._base_url}/{tenant}/oauth2/v2.0/token"

    def jwks_url(self, tenant: str) -> str:
        return f"{self._base_url}/{tenant}/discovery/v2.0/keys"

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self._discovery, methods=["GET"]),
                Route("/{tenant}/discovery/v2.0/keys", self._jwks, methods=["GET"]),
                Route("/{tenant}/oauth2/v2.0/token", self._token, methods=["POST"]),
            ]
        )

    def rotate(self, tenant: str) -> None:
        """Sign with a new key from now on; publish it and the one before it (older keys are dropped)."""
        current = self._tenant_keys(tenant)[0]
        self._keys[tenant] = [_new_signing_key(), current]

    def mint(self, tenant: str, claims: Mapping[str, object]) -> str:
        """Sign a token for `tenant` without the HTTP round trip.

        `iss`, `iat`, `nbf`, `exp`, `tid` and `ver` default to what the token endpoint would set; `claims` override
        them, and a claim given as None is left out (to mint a token without `exp`, say).
        """
        payload = {**self._registered_claims(tenant), **claims}
        return self._sign(tenant, {name: value for name, value in payload.items() if value is not None})

    def _tenant_keys(self, tenant: str) -> list[_SigningKey]:
        try:
            return self._keys[tenant]
        except KeyError:
            raise ValueError(f"unknown demo tenant {tenant!r}") from None

    def _registered_claims(self, tenant: str) -> dict[str, object]:
        now = int(self._clock())
        return {
            "iss": self.issuer_url(tenant),
            "iat": now,
            "nbf": now,
            "exp": now + int(self._token_lifetime),
            "tid": tenant,
            "ver": "2.0",
        }

    def _sign(self, tenant: str, payload: Mapping[str, object]) -> str:
        key = self._tenant_keys(tenant)[0]
        return jwt.encode(dict(payload), key.private_key, algorithm="RS256", headers={"kid": key.kid, "typ": "JWT"})

    def _issue(self, client: DemoClient, audience: str) -> str:
        oid = client.claims.get("oid")
        # Entra's sub for an app token is the service principal's object id; without one, a stable per-client id.
        sub = oid if oid is not None else str(uuid.uuid5(uuid.NAMESPACE_URL, f"{client.tenant}/{client.client_id}"))
        protocol = {"sub": sub, "aud": audience, "azp": client.client_id, "appid": client.client_id}
        # Protocol claims last: a client's extra claims must not override iss, aud, tid or exp.
        return self._sign(client.tenant, {**client.claims, **protocol, **self._registered_claims(client.tenant)})

    def _known_tenant(self, request: Request) -> str:
        tenant: str = request.path_params["tenant"]
        if tenant not in self._keys:
            raise _TokenError(404, "invalid_tenant", "Tenant not found.")
        return tenant

    async def _discovery(self, request: Request) -> JSONResponse:
        try:
            tenant = self._known_tenant(request)
        except _TokenError as exc:
            return exc.response()
        return JSONResponse(
            {
                "issuer": self.issuer_url(tenant),
                "jwks_uri": self.jwks_url(tenant),
                "token_endpoint": self.token_url(tenant),
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "grant_types_supported": ["client_credentials"],
                "response_types_supported": ["token"],
                "subject_types_supported": ["public"],
            }
        )

    async def _jwks(self, request: Request) -> JSONResponse:
        try:
            tenant = self._known_tenant(request)
        except _TokenError as exc:
            return exc.response()
        self.jwks_requests += 1
        return JSONResponse({"keys": [dict(key.jwk) for key in self._keys[tenant]]})

    async def _token(self, request: Request) -> JSONResponse:
        try:
            tenant = self._known_tenant(request)
            form = await _read_form(request)
            if form.get("grant_type") != "client_credentials":
                raise _TokenError(400, "unsupported_grant_type", "Only client_credentials is supported.")
            client = self._authenticate(tenant, _client_credentials(request, form))
            audience = _audience(form.get("scope"))
        except _TokenError as exc:
            return exc.response()
        token = self._issue(client, audience)
        body = {"access_token": token, "token_type": "Bearer", "expires_in": int(self._token_lifetime)}
        return JSONResponse(body, headers=_NO_STORE)

    def _authenticate(self, tenant: str, credentials: tuple[str, str]) -> DemoClient:
        client_id, secret = credentials
        client = self._clients.get(client_id)
        expected = client.client_secret if client is not None else ""
        # Compare even for an unknown client, so the answer takes as long either way.
        secret_ok = hmac.compare_digest(secret.encode(), expected.encode())
        if client is None or not secret_ok or client.tenant != tenant:
            raise _TokenError(401, "invalid_client", "Client authentication failed.")
        return client


async def _read_form(request: Request) -> dict[str, str]:
    """The form body, size-capped; a repeated parameter is an error (RFC 6749 §3.1)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise _TokenError(400, "invalid_request", "The body must be application/x-www-form-urlencoded.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise _TokenError(400, "invalid_request", "The request body is too large.")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise _TokenError(400, "invalid_request", "The request body is not UTF-8.") from None
    form = dict(pairs)
    if len(form) != len(pairs):
        raise _TokenError(400, "invalid_request", "A parameter is repeated.")
    return form


def _client_credentials(request: Request, form: Mapping[str, str]) -> tuple[str, str]:
    """client_secret_basic or client_secret_post, never both (RFC 6749 §2.3.1)."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        return form.get("client_id", ""), form.get("client_secret", "")
    if "client_secret" in form:
        raise _TokenError(400, "invalid_request", "Use one client authentication method, not two.")
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        raise _TokenError(401, "invalid_client", "Client authentication failed.")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _TokenError(401, "invalid_client", "Client authentication failed.") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _TokenError(401, "invalid_client", "Client authentication failed.")
    # Both halves are form-encoded before base64 (RFC 6749 §2.3.1).
    return unquote_plus(client_id), unquote_plus(secret)


def _audience(scope: str | None) -> str:
    """Entra's client-credentials scope is `<resource>/.default`; the token's audience is the resource."""
    if not scope or not scope.endswith(_DEFAULT_SCOPE_SUFFIX) or len(scope) == len(_DEFAULT_SCOPE_SUFFIX):
        raise _TokenError(400, "invalid_scope", "The scope must be '<resource>/.default'.")
    return scope.removesuffix(_DEFAULT_SCOPE_SUFFIX)
