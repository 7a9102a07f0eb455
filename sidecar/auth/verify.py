"""Token verification: a bearer token in, a verified `Identity` out, or a `Rejection` with the most specific `Reason`.

Checks run cheapest and most specific first: size (before any parsing) and shape, the header (read here, not by
pyjwt: ~78 µs saved; keys named by the token and `crit` refused), the issuer (which picks the one provider whose
keys may sign), the algorithm, the `typ` when required, the keys (several when they share the kid, at most 4), then
the signature with pyjwt's algorithm objects, audience and issuer checks,
Entra's `tid`, then the time claims against the injected clock. pyjwt's exceptions become a `Reason` at one boundary
(`_decode`). Verified identities are cached by token digest until `exp` + leeway, and only until an issuer takes a key
away (the whole cache goes then: see KeyStore.generation); authorization is not this
module's job and nothing about it is cached here. Opaque tokens go to the route's introspection provider.

Given a `trace` list, each check appends a `Step` (auth/steps.py: its name, whether it held, what it compared) as it
runs, and the first failing one ends the trace as it ends verification: `sidecar explain` shows these steps, so it
cannot disagree with the proxy. Without a trace (the proxy) the details are never formatted. `check_claims` runs
hand-written claims (`explain --claims`, `sidecar test`) through the same checks but the header, key and signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import jwt
from cachetools import TLRUCache, TTLCache

from sidecar.auth.handclaims import completed
from sidecar.auth.introspect import CLAIMS_ALWAYS_KEPT, Introspector, Profile
from sidecar.auth.jwks import ASYMMETRIC_ALGORITHMS
from sidecar.auth.keys import KeyStore
from sidecar.auth.steps import (
    CHECKED_STEP,
    NOT_A_JWT,
    Trace,
    check,
    claims_detail,
    key_detail,
    listed_detail,
    note,
    size_detail,
    times_detail,
)
from sidecar.auth.timeclaims import check_times
from sidecar.policy.model import DEFAULT_MAX_TOKEN_BYTES, Identity, Provider
from sidecar.reasons import Reason, Rejection

__all__ = ["MAX_TOKEN_CHARS", "Verifier"]

_REFUSED_SIZE: Final = 4096
_REFUSED_SECONDS: Final = 60.0
_Refused = tuple[frozenset[str], Provider, str | None, str, tuple[jwt.PyJWK, ...]]

# The default cap (a provider's max_token_bytes): Entra tokens with many groups stay under ~8 KiB; bigger is an
# attack on parsing. Checked on the length before anything else, so an oversized token costs nothing.
MAX_TOKEN_CHARS: Final = DEFAULT_MAX_TOKEN_BYTES

# Three base64url segments; trailing "=" tolerated as pyjwt does (some issuers pad). An empty signature still parses
# so that `alg: none` is reported as the forbidden algorithm it is, not as a malformed token.
_SEGMENTS: Final = re.compile(r"([A-Za-z0-9_-]+={0,2})\.([A-Za-z0-9_-]+={0,2})\.[A-Za-z0-9_-]*={0,2}")

# Headers that name a key or certificate by URL or inline: the token would be choosing the key that verifies it.
# `crit` lists extensions the verifier must understand (RFC 7515 §4.1.11); we understand none. All of these make a
# token we will not process at all, so MALFORMED_TOKEN (a token we cannot use), not FORBIDDEN_ALGORITHM (the algorithm
# is not at fault).
_REFUSED_HEADERS: Final = ("jku", "x5u", "jwk", "x5c", "crit")


class Verifier:
    """Verifies bearer tokens against the configured providers: JWTs with keys from a `KeyStore`, opaque tokens
    through an `Introspector`.

    Which path a token takes: a token that is not a JWT (three base64url segments, the first a JSON object), or a
    JWT whose `iss` is none of the route's JWT providers, goes to the route's introspection provider when it has one
    (at most one per route, see the loader); otherwise it is refused as malformed or from the wrong issuer.
    One Verifier per policy: it precomputes per-provider lookups from `providers`."""

    __slots__ = (
        "_algorithms",
        "_audiences",
        "_by_issuer",
        "_cache",
        "_clock",
        "_generation",
        "_introspected",
        "_introspector",
        "_keys",
        "_profiles",
        "_providers",
        "_refused",
        "_size_caps",
    )

    def __init__(
        self,
        providers: Mapping[str, Provider],
        keys: KeyStore,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
        introspector: Introspector | None = None,
        claims: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        """`claims`: per introspection provider, the claims its rules can read (introspect.claims_read); an answer
        is cached with those only. None keeps every claim (one-off uses such as `sidecar explain`)."""
        self._providers = dict(providers)
        self._keys = keys
        self._clock = clock
        self._introspector = introspector
        by_issuer: dict[str, list[Provider]] = {}
        for name in sorted(providers):
            for issuer in providers[name].issuers:
                by_issuer.setdefault(issuer, []).append(providers[name])
        self._by_issuer = {issuer: tuple(group) for issuer, group in by_issuer.items()}
        self._introspected = {name for name, p in providers.items() if p.introspection is not None}
        self._profiles: dict[str, Profile] = {}
        if introspector is not None:
            for name in self._introspected:
                kept = None if claims is None else claims.get(name, CLAIMS_ALWAYS_KEPT)
                self._profiles[name] = introspector.profile(providers[name], kept)
        # HS* and none can never pass, whatever a policy says: a JWKS key is public, so it cannot be an HMAC secret.
        self._algorithms = {name: frozenset(p.algorithms) & ASYMMETRIC_ALGORITHMS for name, p in providers.items()}
        self._audiences = {name: tuple(sorted(p.audiences)) for name, p in providers.items()}
        self._size_caps: dict[frozenset[str], int] = {}
        # Keyed by sha256 digest: the cache never holds the token itself.
        self._cache: TLRUCache[bytes, Identity] = TLRUCache(maxsize=cache_size, ttu=self._deadline, timer=clock)
        # The key store's generation the cache was filled under: it moves when an issuer takes a key away, and then
        # the whole cache goes (rotations are rare; a cached token must never outlive the key that signed it).
        self._generation = keys.generation
        # Tokens whose signature failed, by digest, with what decided it (routes' providers, provider, kid, alg, the
        # key objects): the same token against the same key fails again, so a flood of one bad token costs a
        # lookup, not a signature check each. Bounded in size and age; a key fetched since (another object) or
        # another route's providers take the full path again.
        self._refused: TTLCache[bytes, _Refused] = TTLCache(maxsize=_REFUSED_SIZE, ttl=_REFUSED_SECONDS)

    async def verify(self, token: str, allowed_providers: frozenset[str], trace: Trace = None) -> Identity:
        """The verified identity behind `token`, accepted only from `allowed_providers`; raises Rejection.
        `trace` (explain, test) collects each check; a verifier's caches make a trace of a repeated token short."""
        # Refused before any parsing (RFC 8725 §3.x: bound the work an attacker can cause).
        if len(token) > self._size_cap(allowed_providers) or not token.isascii():
            check(
                trace,
                "size",
                False,
                Reason.MALFORMED_TOKEN,
                lambda: size_detail(token, self._size_cap(allowed_providers)),
            )
        digest = hashlib.sha256(token.encode("ascii")).digest()
        if self._generation != self._keys.generation:
            self._generation = self._keys.generation
            self._cache.clear()
        # A hit skips the signature; the TLRU cache no longer returns it once exp + leeway has passed.
        identity = self._cache.get(digest)
        if identity is not None and identity.provider in allowed_providers:
            return identity
        refused = self._refused.get(digest)
        if refused is not None and refused[0] == allowed_providers:
            _, provider, kid, alg, keys = refused
            if await self._keys.keys(provider, kid, alg) == keys:  # raises as the full path would, keys gone
                check(trace, "signature", False, Reason.BAD_SIGNATURE, lambda: "refused before with the same key")
        # A miss, or a hit for a provider this route does not allow: the full path names the precise reason
        # (wrong_issuer when issuers are distinct) or accepts it for another provider sharing the issuer.
        note(trace, "size", True, lambda: size_detail(token, self._size_cap(allowed_providers)))
        opaque = self._introspection_provider(allowed_providers)
        segments = _SEGMENTS.fullmatch(token)
        header = _header(segments[1]) if segments is not None else None
        if segments is None or header is None:
            if opaque is not None:
                return await self._introspect(opaque, token, trace, "not a JWT")
            check(trace, "format", False, Reason.MALFORMED_TOKEN, lambda: NOT_A_JWT)
        assert segments is not None and header is not None  # check raised otherwise
        try:
            parsed = _read_header(header)
            payload = _json_segment(segments[2])
        except Rejection:
            note(
                trace,
                "format",
                False,
                lambda: (
                    "the header names its own key (jku, x5u, jwk, x5c) or crit, "
                    "or alg, kid or the payload is not of the JSON type required"
                ),
            )
            raise
        note(trace, "format", True, lambda: "three base64url segments, JSON header and payload")
        if opaque is not None and not self._jwt_provider_exists(payload.get("iss"), allowed_providers):
            return await self._introspect(opaque, token, trace, "its iss is none of this route's JWT issuers")
        identity = await self._verify_jwt(token, digest, parsed, payload, allowed_providers, trace)
        self._cache[digest] = identity
        return identity

    def check_claims(
        self, payload: Mapping[str, object], allowed_providers: frozenset[str], trace: Trace = None
    ) -> Identity:
        """Claims written by hand (`sidecar explain --claims`, `sidecar test`), completed (handclaims), through every
        check that needs no token: the issuer picks the provider, then `exp`, audience, Entra's `tid` and the time
        claims. No header, key or signature: that is what hand-written claims skip."""
        claims = completed(payload, allowed_providers, self._providers, self._clock())
        provider, issuer = self._provider_for(claims, allowed_providers, trace)
        return self._accept(claims, provider, issuer, trace)

    async def _verify_jwt(
        self,
        token: str,
        digest: bytes,
        header: tuple[str, str | None, object],
        payload: dict[str, Any],
        allowed: frozenset[str],
        trace: Trace,
    ) -> Identity:
        alg, kid, typ = header
        provider, issuer = self._provider_for(payload, allowed, trace)
        algorithms = self._algorithms[provider.name]
        check(
            trace,
            "algorithm",
            alg in algorithms,
            Reason.FORBIDDEN_ALGORITHM,
            lambda: listed_detail("alg", alg, algorithms),
        )
        if provider.require_typ is not None:
            required = provider.require_typ
            ok = _media_type(typ) == required
            check(trace, "type", ok, Reason.WRONG_TOKEN_TYPE, lambda: f"typ {typ!r}; required: {required}")
        try:
            keys = await self._keys.keys(provider, kid, alg)
        except Rejection as rejection:
            missing = rejection.reason
            note(trace, "key", False, lambda: key_detail(missing, kid))
            raise
        note(trace, "key", True, lambda: f"kid {kid!r} published by the issuer")
        if not any(_signed_by(token, key) for key in keys):  # several only when keys share the kid (bounded)
            self._refused[digest] = (allowed, provider, kid, alg, keys)
            check(trace, "signature", False, Reason.BAD_SIGNATURE, lambda: "does not verify with the issuer's key")
        note(trace, "signature", True, lambda: "verified with the issuer's key")
        return self._accept(payload, provider, issuer, trace)

    def _accept(self, payload: dict[str, Any], provider: Provider, issuer: str, trace: Trace) -> Identity:
        """The checks after the signature: claim types, audience, issuer, Entra's `tid`, time claims."""
        audiences = self._audiences[provider.name]
        try:
            claims = _checked(payload, issuer, audiences)
        except Rejection as rejection:
            note(trace, CHECKED_STEP[rejection.reason], False, lambda: claims_detail(payload, audiences))
            raise
        note(trace, "audience", True, lambda: claims_detail(payload, audiences))
        if provider.tenant is not None:
            tenant = provider.tenant
            ok = _lower(claims.get("tid")) == tenant
            # Entra: a token of another tenant, whatever its iss says
            check(trace, "tenant", ok, Reason.WRONG_ISSUER, lambda: f"tid {claims.get('tid')!r}; required: {tenant}")
        try:
            expires_at = check_times(claims, self._clock(), provider.leeway)
        except Rejection:
            note(trace, "lifetime", False, lambda: times_detail(claims, self._clock(), provider.leeway))
            raise
        note(trace, "lifetime", True, lambda: times_detail(claims, self._clock(), provider.leeway))
        assert expires_at is not None  # exp is required
        return Identity(provider=provider.name, claims=MappingProxyType(claims), expires_at=expires_at)

    @property
    def profiles(self) -> list[Profile]:
        """The introspection profiles of this verifier's policy (what `Introspector.retain` keeps on a reload)."""
        return list(self._profiles.values())

    async def _introspect(self, provider: Provider, token: str, trace: Trace, why: str) -> Identity:
        if self._introspector is None:  # a runtime built without one cannot ask: the token may still be good
            check(trace, "introspection", False, Reason.INTROSPECTION_UNAVAILABLE, lambda: "no introspection client")
        assert self._introspector is not None
        try:
            identity = await self._introspector.introspect(self._profiles[provider.name], token)
        except Rejection as rejection:
            refused = rejection.reason
            note(trace, "introspection", False, lambda: f"{why}: asked {provider.name}: {refused.value}")
            raise
        note(trace, "introspection", True, lambda: f"{why}: {provider.name} says it is active")
        return identity

    def _introspection_provider(self, allowed: frozenset[str]) -> Provider | None:
        names = sorted(self._introspected & allowed)
        return self._providers[names[0]] if names else None

    def _jwt_provider_exists(self, issuer: object, allowed: frozenset[str]) -> bool:
        return isinstance(issuer, str) and any(p.name in allowed for p in self._by_issuer.get(issuer, ()))

    def _size_cap(self, allowed: frozenset[str]) -> int:
        cap = self._size_caps.get(allowed)
        if cap is None:
            sizes = [self._providers[name].max_token_bytes for name in allowed if name in self._providers]
            cap = self._size_caps[allowed] = max(sizes, default=DEFAULT_MAX_TOKEN_BYTES)
        return cap

    def _provider_for(
        self, payload: Mapping[str, Any], allowed_providers: frozenset[str], trace: Trace = None
    ) -> tuple[Provider, str]:
        """The one provider whose keys may sign this token (an allowed provider that accepts exactly this issuer),
        and that issuer. Never chosen by trying keys."""
        issuer = payload.get("iss")
        if not isinstance(issuer, str):
            reason = Reason.WRONG_ISSUER if issuer is None else Reason.MALFORMED_TOKEN
            check(trace, "issuer", False, reason, lambda: self._issuers(issuer, allowed_providers))
        assert isinstance(issuer, str)
        candidates = [p for p in self._by_issuer.get(issuer, ()) if p.name in allowed_providers]
        check(trace, "issuer", bool(candidates), Reason.WRONG_ISSUER, lambda: self._issuers(issuer, allowed_providers))
        if len(candidates) > 1:
            # Providers sharing an issuer differ by audience: pick by the (unverified) aud, which pyjwt then checks.
            # Only a choice among configured providers; the token never gets more than one signature check.
            audiences = _audience_set(payload.get("aud"))
            for provider in candidates:
                if not provider.audiences.isdisjoint(audiences):
                    return provider, issuer
        return candidates[0], issuer

    def _issuers(self, issuer: object, allowed: frozenset[str]) -> str:
        """What the issuer step compared: `iss`, and every issuer this route accepts, by provider."""
        accepted = "; ".join(
            f"{name}: {', '.join(sorted(self._providers[name].issuers))}"
            for name in sorted(allowed)
            if name in self._providers and self._providers[name].issuers
        )
        return f"iss {issuer!r}; this route accepts {accepted or 'no JWT issuer'}"

    def _deadline(self, _digest: bytes, identity: Identity, _now: float) -> float:
        return identity.expires_at + self._providers[identity.provider].leeway


def _json_segment(segment: str) -> dict[str, Any]:
    """A base64url JSON object segment, unverified. `segment` matched _SEGMENTS, so it is base64url already."""
    value = _header(segment)
    if value is None:
        raise Rejection(Reason.MALFORMED_TOKEN)
    return value


def _header(segment: str) -> dict[str, Any] | None:
    """The decoded JSON object, or None when the segment is not one (then the token is not a JWT)."""
    stripped = segment.rstrip("=")
    try:
        value = json.loads(base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _read_header(header: dict[str, Any]) -> tuple[str, str | None, object]:
    """alg, kid and typ. RFC 8725 §3.10: never let the token choose its key (jku, x5u, jwk, x5c) or demand
    extensions we do not implement (crit)."""
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or not (kid is None or isinstance(kid, str)):
        raise Rejection(Reason.MALFORMED_TOKEN)
    if any(name in header for name in _REFUSED_HEADERS):
        raise Rejection(Reason.MALFORMED_TOKEN)
    return alg, kid, header.get("typ")


def _media_type(typ: object) -> str | None:
    """RFC 7515 §4.1.9: compared case-insensitively, "application/" may be left out."""
    if not isinstance(typ, str):
        return None
    lowered = typ.lower()
    return lowered.removeprefix("application/")


def _lower(value: object) -> str | None:
    return value.lower() if isinstance(value, str) else None


def _audience_set(aud: object) -> frozenset[str]:
    if isinstance(aud, str):
        return frozenset((aud,))
    if isinstance(aud, list):
        return frozenset(item for item in aud if isinstance(item, str))
    return frozenset()


def _signed_by(token: str, key: jwt.PyJWK) -> bool:
    """Whether `key` made the signature (by the key's algorithm, bound to the token's `alg` when the key was chosen).
    pyjwt's `decode` would parse the token a second time and cost three times as much (BENCHMARKS.md); its algorithm
    objects still do the cryptography."""
    signing_input, _, encoded = token.rpartition(".")
    encoded = encoded.rstrip("=")
    try:
        signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        return bool(key.Algorithm.verify(signing_input.encode("ascii"), key.key, signature))
    except (binascii.Error, ValueError, TypeError):  # a signature of the wrong shape for the key
        return False


def _checked(payload: dict[str, Any], issuer: str, audiences: tuple[str, ...]) -> dict[str, Any]:
    """After the signature: `exp` present, `sub`/`jti` types, `aud` and `iss`. Time claims are checked by
    `check_times` with the injected clock, so the cache deadline and the expiry check agree by construction."""
    if payload.get("exp") is None:
        raise Rejection(Reason.MALFORMED_TOKEN)
    if any(name in payload and not isinstance(payload[name], str) for name in ("sub", "jti")):
        raise Rejection(Reason.MALFORMED_TOKEN)  # as pyjwt: these must be strings
    aud = payload.get("aud")
    if isinstance(aud, list) and not all(isinstance(item, str) for item in aud):
        raise Rejection(Reason.WRONG_AUDIENCE)  # as pyjwt: a malformed audience list is no audience
    if _audience_set(aud).isdisjoint(audiences):
        raise Rejection(Reason.WRONG_AUDIENCE)
    if payload.get("iss") != issuer:
        raise Rejection(Reason.WRONG_ISSUER)
    return payload
