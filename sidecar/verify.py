"""Token verification: a bearer JWT in, a verified `Identity` out, or a `Rejection` with the most specific `Reason`.

Checks run cheapest and most specific first: size and shape, the header (read here, not by pyjwt: ~78 µs saved),
the issuer (which picks the one provider whose keys may sign), the algorithm, the key, then pyjwt's signature,
audience and issuer checks, then the time claims against the injected clock. pyjwt's exceptions become a `Reason` at
one boundary (`_decode`). Verified identities are cached by token digest until `exp` + leeway; authorization is not
this module's job and nothing about it is cached here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import jwt
from cachetools import TLRUCache

from sidecar.decision import Reason, Rejection
from sidecar.keys import ASYMMETRIC_ALGORITHMS, KeyStore
from sidecar.policy.model import Identity, Provider

__all__ = ["MAX_TOKEN_CHARS", "Verifier"]

MAX_TOKEN_CHARS: Final = 16 * 1024  # Entra tokens with many groups stay under ~8 KiB; bigger is an attack on parsing

# Three base64url segments; trailing "=" tolerated as pyjwt does (some issuers pad). An empty signature still parses
# so that `alg: none` is reported as the forbidden algorithm it is, not as a malformed token.
_SEGMENTS: Final = re.compile(r"([A-Za-z0-9_-]+={0,2})\.([A-Za-z0-9_-]+={0,2})\.[A-Za-z0-9_-]*={0,2}")

# Headers that name a key or certificate by URL or inline: the token would be choosing the key that verifies it.
# `crit` lists extensions the verifier must understand (RFC 7515 §4.1.11); we understand none. All of these make a
# token we will not process at all, so MALFORMED_TOKEN (a token we cannot use), not FORBIDDEN_ALGORITHM (the algorithm
# is not at fault).
_REFUSED_HEADERS: Final = ("jku", "x5u", "jwk", "x5c", "crit")

# Time claims are checked here with the injected clock (pyjwt reads the wall clock and accepts "1700000000" strings),
# so the cache deadline and the expiry check agree by construction.
_DECODE_OPTIONS: Final[Any] = {
    "require": ["exp", "iss", "aud"],
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
}

# Most specific first: InvalidSignatureError is a DecodeError, and everything is a PyJWTError.
_PYJWT_REASONS: Final[tuple[tuple[type[Exception], Reason], ...]] = (
    (jwt.InvalidSignatureError, Reason.BAD_SIGNATURE),
    (jwt.ExpiredSignatureError, Reason.EXPIRED),
    (jwt.ImmatureSignatureError, Reason.NOT_YET_VALID),
    (jwt.InvalidAudienceError, Reason.WRONG_AUDIENCE),
    (jwt.InvalidIssuerError, Reason.WRONG_ISSUER),
    (jwt.InvalidAlgorithmError, Reason.FORBIDDEN_ALGORITHM),
    (jwt.PyJWTError, Reason.MALFORMED_TOKEN),
)
_MISSING_CLAIM_REASONS: Final[Mapping[str, Reason]] = {"aud": Reason.WRONG_AUDIENCE, "iss": Reason.WRONG_ISSUER}


class Verifier:
    """Verifies bearer JWTs against the configured providers, with keys from a `KeyStore`.

    One Verifier per policy: it precomputes per-provider lookups from `providers`."""

    __slots__ = ("_algorithms", "_audiences", "_by_issuer", "_cache", "_clock", "_keys", "_providers")

    def __init__(
        self,
        providers: Mapping[str, Provider],
        keys: KeyStore,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self._providers = dict(providers)
        self._keys = keys
        self._clock = clock
        by_issuer: dict[str, list[Provider]] = {}
        for name in sorted(providers):
            by_issuer.setdefault(providers[name].issuer, []).append(providers[name])
        self._by_issuer = {issuer: tuple(group) for issuer, group in by_issuer.items()}
        # HS* and none can never pass, whatever a policy says: a JWKS key is public, so it cannot be an HMAC secret.
        self._algorithms = {name: frozenset(p.algorithms) & ASYMMETRIC_ALGORITHMS for name, p in providers.items()}
        self._audiences = {name: tuple(sorted(p.audiences)) for name, p in providers.items()}
        # Keyed by sha256 digest: the cache never holds the token itself.
        self._cache: TLRUCache[bytes, Identity] = TLRUCache(maxsize=cache_size, ttu=self._deadline, timer=clock)

    async def verify(self, token: str, allowed_providers: frozenset[str]) -> Identity:
        """The verified identity behind `token`, accepted only from `allowed_providers`; raises Rejection."""
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise Rejection(Reason.MALFORMED_TOKEN)
        digest = hashlib.sha256(token.encode("ascii")).digest()
        # A hit skips the signature; the TLRU cache no longer returns it once exp + leeway has passed.
        identity = self._cache.get(digest)
        if identity is not None and identity.provider in allowed_providers:
            return identity
        # A miss, or a hit for a provider this route does not allow: the full path names the precise reason
        # (wrong_issuer when issuers are distinct) or accepts it for another provider sharing the issuer.
        identity = await self._verify_uncached(token, allowed_providers)
        self._cache[digest] = identity
        return identity

    async def _verify_uncached(self, token: str, allowed_providers: frozenset[str]) -> Identity:
        segments = _SEGMENTS.fullmatch(token)
        if segments is None:
            raise Rejection(Reason.MALFORMED_TOKEN)
        alg, kid = _read_header(_json_segment(segments[1]))
        provider = self._provider_for(_json_segment(segments[2]), allowed_providers)
        if alg not in self._algorithms[provider.name]:
            raise Rejection(Reason.FORBIDDEN_ALGORITHM)
        key = await self._keys.key(provider, kid, alg)
        claims = _decode(token, key, alg, provider, self._audiences[provider.name])
        expires_at = _check_times(claims, self._clock(), provider.leeway)
        return Identity(provider=provider.name, claims=MappingProxyType(claims), expires_at=expires_at)

    def _provider_for(self, payload: dict[str, Any], allowed_providers: frozenset[str]) -> Provider:
        """The one provider whose keys may sign this token: an allowed provider with exactly this issuer."""
        issuer = payload.get("iss")
        if issuer is None:
            raise Rejection(Reason.WRONG_ISSUER)
        if not isinstance(issuer, str):
            raise Rejection(Reason.MALFORMED_TOKEN)
        candidates = [p for p in self._by_issuer.get(issuer, ()) if p.name in allowed_providers]
        if not candidates:
            raise Rejection(Reason.WRONG_ISSUER)
        if len(candidates) > 1:
            # Providers sharing an issuer differ by audience: pick by the (unverified) aud, which pyjwt then checks.
            # Only a choice among configured providers; the token never gets more than one signature check.
            audiences = _audience_set(payload.get("aud"))
            for provider in candidates:
                if not provider.audiences.isdisjoint(audiences):
                    return provider
        return candidates[0]

    def _deadline(self, _digest: bytes, identity: Identity, _now: float) -> float:
        return identity.expires_at + self._providers[identity.provider].leeway


def _json_segment(segment: str) -> dict[str, Any]:
    """A base64url JSON object segment, unverified. `segment` matched _SEGMENTS, so it is base64url already."""
    stripped = segment.rstrip("=")
    try:
        value = json.loads(base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4)))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise Rejection(Reason.MALFORMED_TOKEN) from exc
    if not isinstance(value, dict):
        raise Rejection(Reason.MALFORMED_TOKEN)
    return value


def _read_header(header: dict[str, Any]) -> tuple[str, str | None]:
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or not (kid is None or isinstance(kid, str)):
        raise Rejection(Reason.MALFORMED_TOKEN)
    if any(name in header for name in _REFUSED_HEADERS):
        raise Rejection(Reason.MALFORMED_TOKEN)
    return alg, kid


def _audience_set(aud: object) -> frozenset[str]:
    if isinstance(aud, str):
        return frozenset((aud,))
    if isinstance(aud, list):
        return frozenset(item for item in aud if isinstance(item, str))
    return frozenset()


def _decode(token: str, key: jwt.PyJWK, alg: str, provider: Provider, audiences: tuple[str, ...]) -> dict[str, Any]:
    """Signature, audience and issuer, by pyjwt. The one place its exceptions become a Reason.

    `algorithms=[alg]` names the token's own alg, which pyjwt warns against (RFC 8725 §2.1) unless it is checked
    elsewhere: it is, against the provider's configured list, and the PyJWK is bound to that one algorithm."""
    try:
        return jwt.decode(
            token, key, algorithms=[alg], audience=audiences, issuer=provider.issuer, options=_DECODE_OPTIONS
        )
    except jwt.MissingRequiredClaimError as exc:
        raise Rejection(_MISSING_CLAIM_REASONS.get(exc.claim, Reason.MALFORMED_TOKEN)) from exc
    except jwt.PyJWTError as exc:
        raise Rejection(next(reason for kind, reason in _PYJWT_REASONS if isinstance(exc, kind))) from exc
    except (ValueError, TypeError) as exc:  # pragma: no cover - no known path; a parser below pyjwt failing on
        raise Rejection(Reason.MALFORMED_TOKEN) from exc  # hostile input must still be just a bad token


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> float:
    """`exp` (required), `nbf` and `iat` as JSON numbers, against `now` with leeway; returns exp."""
    exp = _seconds(claims["exp"])
    nbf = _seconds(claims["nbf"]) if "nbf" in claims else None
    iat = _seconds(claims["iat"]) if "iat" in claims else None
    if exp is None or ("nbf" in claims and nbf is None) or ("iat" in claims and iat is None):
        raise Rejection(Reason.MALFORMED_TOKEN)
    if exp <= now - leeway:
        raise Rejection(Reason.EXPIRED)
    if (nbf is not None and nbf > now + leeway) or (iat is not None and iat > now + leeway):
        raise Rejection(Reason.NOT_YET_VALID)
    return exp


def _seconds(value: object) -> float | None:
    """A finite JSON number as float; None for strings, booleans (an int subclass), NaN, infinities, huge ints."""
    if type(value) is not int and type(value) is not float:
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) else None
