"""Keys, JWKS documents and tokens for tests: honest ones minted with pyjwt, and forged ones for the attack tables.

Key generation is slow (RSA ~50 ms), so keys are made once per kid and reused for the whole session.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from sidecar.policy.model import Provider

__all__ = [
    "ISSUER",
    "AUDIENCE",
    "FakeClock",
    "FakeIntrospection",
    "FakeIssuer",
    "KeyPair",
    "b64url",
    "claims",
    "ec_key",
    "ed_key",
    "forge_hs256_with_public_pem",
    "forge_unsigned",
    "jwks",
    "mint",
    "rsa_key",
    "serve",
    "strip_signature",
    "swap_signature",
    "tamper_payload",
    "with_header",
]

ISSUER: Final = "https://issuer.test/tenant/v2.0"
AUDIENCE: Final = "api://sidecar-test"

_CURVES: Final[Mapping[str, tuple[type[ec.EllipticCurve], str]]] = {
    "P-256": (ec.SECP256R1, "ES256"),
    "P-384": (ec.SECP384R1, "ES384"),
    "P-521": (ec.SECP521R1, "ES512"),
}


class _KidFromKey:
    """Sentinel default of `mint(kid=...)`: use the key's own kid. Pass kid=None for a token without one."""


_KEY_KID: Final = _KidFromKey()


@dataclass(frozen=True)
class KeyPair:
    """A private key with its kid and default algorithm; `jwk()` is the public half as an issuer publishes it."""

    kid: str
    alg: str
    private: PrivateKeyTypes

    def jwk(self, **extra: Any) -> dict[str, Any]:
        """The public JWK with `kid` and `use: sig` (no `alg` unless given); `extra` overrides or adds members,
        a value of None removes the member."""
        public = self.private.public_key()
        data: dict[str, Any] = json.loads(jwt.get_algorithm_by_name(self.alg).to_jwk(public))
        data.pop("alg", None)
        data.update(kid=self.kid, use="sig")
        for name, value in extra.items():
            if value is None:
                data.pop(name, None)
            else:
                data[name] = value
        return data

    def public_pem(self) -> bytes:
        public = self.private.public_key()
        pem: bytes = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        return pem


@functools.cache
def rsa_key(kid: str = "rsa-1", bits: int = 2048) -> KeyPair:
    return KeyPair(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=bits))


@functools.cache
def ec_key(kid: str = "ec-1", curve: str = "P-256") -> KeyPair:
    curve_type, alg = _CURVES[curve]
    return KeyPair(kid, alg, ec.generate_private_key(curve_type()))


@functools.cache
def ed_key(kid: str = "ed-1") -> KeyPair:
    return KeyPair(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def jwks(*keys: KeyPair | dict[str, Any]) -> dict[str, Any]:
    """A JWKS document: KeyPairs become their public JWK, dicts are taken as written (for odd keys)."""
    return {"keys": [key.jwk() if isinstance(key, KeyPair) else key for key in keys]}


def claims(
    *,
    lifetime: float = 300,
    now: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Plausible access-token claims: iss, aud, sub, oid, iat, nbf, exp = now + lifetime. `extra` overrides;
    a value of None removes the claim."""
    issued = int(time.time() if now is None else now)
    data: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "subject-1",
        "oid": "00000000-0000-0000-0000-000000000001",
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(lifetime),
    }
    for name, value in extra.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return data


def mint(
    claims: Mapping[str, Any],
    key: KeyPair,
    alg: str | None = None,
    kid: str | None | _KidFromKey = _KEY_KID,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A token signed by `key` with `alg` (default: the key's). `headers` add to (or override) the JOSE header."""
    header: dict[str, Any] = {"typ": "JWT"}
    resolved = key.kid if isinstance(kid, _KidFromKey) else kid
    if resolved is not None:
        header["kid"] = resolved
    header.update(headers or {})
    return jwt.encode(dict(claims), key.private, algorithm=alg or key.alg, headers=header)  # type: ignore[arg-type]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(value: Mapping[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def forge_unsigned(claims: Mapping[str, Any], alg: str = "none", kid: str | None = None) -> str:
    """`alg: none` in any spelling, with an empty signature (the classic downgrade)."""
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return f"{_segment(header)}.{_segment(claims)}."


def forge_hs256_with_public_pem(claims: Mapping[str, Any], key: KeyPair, kid: str | None = None) -> str:
    """HS256 keyed with the issuer's public key PEM: the algorithm-confusion attack (pyjwt refuses to make one)."""
    header = {"alg": "HS256", "typ": "JWT", "kid": kid or key.kid}
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = hmac.new(key.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def tamper_payload(token: str, **changes: Any) -> str:
    """The same header and signature around a payload with `changes` applied (None removes a claim)."""
    header, payload, signature = token.split(".")
    return f"{header}.{_changed(payload, changes)}.{signature}"


def with_header(token: str, **changes: Any) -> str:
    """The same payload and signature under a header with `changes` applied (None removes a member)."""
    header, payload, signature = token.split(".")
    return f"{_changed(header, changes)}.{payload}.{signature}"


def _changed(segment: str, changes: Mapping[str, Any]) -> str:
    data = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    return _segment(data)


def strip_signature(token: str, keep_dot: bool = True) -> str:
    """`h.p.` (empty signature) or, with keep_dot=False, `h.p` (two segments)."""
    signing_input = token.rsplit(".", 1)[0]
    return signing_input + "." if keep_dot else signing_input


def swap_signature(token: str, donor: str) -> str:
    """`token`'s header and payload with `donor`'s signature."""
    return token.rsplit(".", 1)[0] + "." + donor.rsplit(".", 1)[1]


class FakeClock:
    """An injectable clock that moves only when told: `clock.now += 31`."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeIssuer:
    """An OIDC issuer behind an `httpx.MockTransport`: discovery at `{issuer}/.well-known/openid-configuration`,
    the JWKS at `jwks_uri`. Every request is recorded in `requests`; set `status` or `error` to misbehave, or
    replace `jwks` / `discovery` to publish something else. `hold()` keeps requests in flight: each one sets
    `entered` and waits until `release()` (tests synchronise on these events, never on sleeps)."""

    def __init__(self, *keys: KeyPair | dict[str, Any], issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.jwks_uri = issuer.rstrip("/") + "/discovery/keys"
        self.jwks: dict[str, Any] | bytes = jwks(*keys)
        self.discovery: dict[str, Any] = {"issuer": issuer, "jwks_uri": self.jwks_uri}
        self.jwks_headers: dict[str, str] = {}  # e.g. {"cache-control": "max-age=600"}
        self.requests: list[str] = []
        self.status = 200
        self.error: Exception | None = None
        self.entered = asyncio.Event()
        self._gate: asyncio.Event | None = None

    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def provider(self, name: str = "main", *, direct: bool = False, **overrides: Any) -> Provider:
        """A Provider for this issuer: keys via discovery, or with direct=True straight from `jwks_uri`."""
        fields: dict[str, Any] = {
            "name": name,
            "issuer": self.issuer,
            "audiences": frozenset({AUDIENCE}),
            "jwks_uri": self.jwks_uri if direct else None,
        }
        fields.update(overrides)
        return Provider(**fields)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    @property
    def jwks_requests(self) -> int:
        return sum(1 for url in self.requests if url.startswith(self.jwks_uri))

    async def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requests.append(url)
        self.entered.set()
        if self._gate is not None:
            await self._gate.wait()
        if self.error is not None:
            raise self.error
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "down"})
        if url == self.discovery_url:
            return httpx.Response(200, json=self.discovery)
        if url.startswith(self.jwks_uri):
            if isinstance(self.jwks, bytes):
                return httpx.Response(200, content=self.jwks, headers=self.jwks_headers)
            return httpx.Response(200, json=self.jwks, headers=self.jwks_headers)
        return httpx.Response(404)


class FakeIntrospection:
    """An RFC 7662 endpoint behind an `httpx.MockTransport`: `answers` maps a token to the JSON body returned for
    it (unknown tokens: `{"active": false}`). Records the form and Authorization of each call; set `status`,
    `error` or `body` (raw bytes for every call) to misbehave; `hold()` / `release()` as in FakeIssuer."""

    def __init__(self, endpoint: str = "https://idp.test/oauth2/introspect") -> None:
        self.endpoint = endpoint
        self.answers: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[dict[str, str], str | None]] = []
        self.status = 200
        self.error: Exception | None = None
        self.body: bytes | None = None
        self.entered = asyncio.Event()
        self._gate: asyncio.Event | None = None

    def hold(self) -> None:
        self._gate = asyncio.Event()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    async def handle(self, request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        self.calls.append((form, request.headers.get("authorization")))
        self.entered.set()
        if self._gate is not None:
            await self._gate.wait()
        if self.error is not None:
            raise self.error
        if str(request.url) != self.endpoint or request.method != "POST":
            return httpx.Response(404)
        if self.status != 200:
            return httpx.Response(self.status, json={"error": "down"})
        if self.body is not None:
            return httpx.Response(200, content=self.body)
        return httpx.Response(200, json=self.answers.get(form.get("token", ""), {"active": False}))


def serve(*issuers: FakeIssuer) -> httpx.AsyncClient:
    """One client for several fake issuers, dispatched by host (each issuer needs its own host)."""
    by_host = {httpx.URL(issuer.issuer).host: issuer for issuer in issuers}

    async def handle(request: httpx.Request) -> httpx.Response:
        issuer = by_host.get(request.url.host)
        return httpx.Response(404) if issuer is None else await issuer.handle(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))
