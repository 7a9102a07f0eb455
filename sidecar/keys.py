"""Signing keys per provider: OIDC discovery, async JWKS fetch, and a rate-limited, single-flight refetch on a kid miss.

State is per provider and survives policy reloads (keyed by issuer and configured jwks_uri). It is not a TTL cache:
keys are replaced only by a successful fetch, so stale keys keep serving while the issuer is down. A kid miss
refetches at most once per `provider.jwks_min_refresh`, and concurrent misses share one fetch task: a flood of
tokens with invented kids costs the issuer one request per interval, never one per token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import jwt

from sidecar.decision import Reason, Rejection
from sidecar.policy.model import Provider

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "FETCH_TIMEOUT_SECONDS",
    "MAX_JWKS_BYTES",
    "MAX_JWKS_KEYS",
    "KeyStore",
]

log = logging.getLogger(__name__)

MAX_JWKS_BYTES: Final = 1 << 20  # discovery documents and JWKS are a few KiB; anything bigger is not an issuer
MAX_JWKS_KEYS: Final = 100
FETCH_TIMEOUT_SECONDS: Final = 10.0  # one whole fetch (discovery + JWKS), not per read

# Which key an algorithm needs: (kty, the curves that fit, or None when the curve does not decide).
# Only asymmetric algorithms: a symmetric (`oct`) key published in a JWKS is public, so it proves nothing.
_ALGORITHM_KEYS: Final[Mapping[str, tuple[str, frozenset[str] | None]]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "ES256K": ("EC", frozenset({"secp256k1"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
ASYMMETRIC_ALGORITHMS: Final = frozenset(_ALGORITHM_KEYS)
_LOOPBACK_NAMES: Final = frozenset({"localhost"})


class _FetchError(Exception):
    """A fetch failed; the message is for `last_error` and logs (URLs without their query, never key material)."""


class _Key:
    """One published verification key, and the PyJWK per algorithm built from it on first use.

    A PyJWK is bound to one algorithm (pyjwt refuses a token whose alg differs), and an RSA key without `alg`
    serves RS256 and PS256 alike, so the PyJWK is built per (key, alg) and kept."""

    __slots__ = ("_jwk", "_loaded", "algorithms", "kid")

    def __init__(self, jwk: dict[str, Any], algorithms: frozenset[str]) -> None:
        self._jwk = jwk
        self._loaded: dict[str, jwt.PyJWK] = {}
        self.algorithms = algorithms
        self.kid: str | None = jwk.get("kid")

    def for_algorithm(self, alg: str) -> jwt.PyJWK | None:
        loaded = self._loaded.get(alg)
        if loaded is None and alg in self.algorithms:
            try:
                loaded = jwt.PyJWK(self._jwk, alg)
            except jwt.PyJWTError:
                return None
            self._loaded[alg] = loaded
        return loaded


@dataclass(slots=True)
class _State:
    """What we know of one provider's keys. Replaced field by field by a fetch; never expired by time."""

    keys_by_kid: dict[str | None, tuple[_Key, ...]] = field(default_factory=dict)
    fetched_at: float | None = None  # last successful fetch (KeyStore clock); None: never
    # Last fetch started by an unknown kid. The rate limit counts only these: start-up and scheduled fetches do
    # not delay the first miss after them, so a rotation right after start-up is followed without a failed call.
    missed_at: float | None = None
    last_error: str | None = None
    fetch_count: int = 0
    inflight: asyncio.Task[None] | None = None


class KeyStore:
    """The verification keys of every provider, fetched through an injected `httpx.AsyncClient`."""

    def __init__(self, client: httpx.AsyncClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._states: dict[tuple[str, str | None], _State] = {}

    async def prime(self, providers: Iterable[Provider]) -> None:
        """Fetch every provider's keys once, concurrently, whatever the refetch interval (startup, reload).

        Providers sharing a key source share one fetch. Failures are recorded in `last_error`, never raised."""
        tasks = {id(self._state(p)): self._start_fetch(p) for p in providers}
        if tasks:
            await asyncio.gather(*(asyncio.shield(task) for task in tasks.values()))

    def ready(self, providers: Iterable[Provider]) -> bool:
        """True when every provider has had at least one successful fetch (what `/readyz` reports)."""
        return all(self._state(p).fetched_at is not None for p in providers)

    def fetch_count(self, provider: Provider) -> int:
        return self._state(provider).fetch_count

    def last_error(self, provider: Provider) -> str | None:
        return self._state(provider).last_error

    async def key(self, provider: Provider, kid: str | None, alg: str) -> jwt.PyJWK:
        """The provider's key for `kid` that fits `alg`; raises Rejection(UNKNOWN_KEY or KEYS_UNAVAILABLE).

        A key that exists under `kid` but does not fit `alg` (another key type or curve, a JWK `alg` naming another
        algorithm) counts as absent: UNKNOWN_KEY, not FORBIDDEN_ALGORITHM, because the algorithm itself is one the
        provider accepts; it is this issuer's key set that has no such key. With no `kid` the provider's only key is
        used, and only when it publishes exactly one: trying every key would let one token cost N signature checks.
        """
        state = self._state(provider)
        found = _find(state, kid, alg)
        if found is not None:
            return found
        task = state.inflight
        if task is None and self._may_refetch(state, provider):
            state.missed_at = self._clock()
            task = self._start_fetch(provider)
        if task is not None:
            # shield: a caller that goes away (client disconnect) must not cancel the fetch the others share.
            await asyncio.shield(task)
            found = _find(state, kid, alg)
            if found is not None:
                return found
        if state.fetched_at is None:
            raise Rejection(Reason.KEYS_UNAVAILABLE)
        raise Rejection(Reason.UNKNOWN_KEY)

    def _state(self, provider: Provider) -> _State:
        # Keyed by where the keys come from, not by provider name: a reload that keeps the provider keeps its keys.
        ident = (provider.issuer, provider.jwks_uri)
        state = self._states.get(ident)
        if state is None:
            state = self._states[ident] = _State()
        return state

    def _may_refetch(self, state: _State, provider: Provider) -> bool:
        return state.missed_at is None or self._clock() - state.missed_at >= provider.jwks_min_refresh

    def _start_fetch(self, provider: Provider) -> asyncio.Task[None]:
        """The provider's fetch task: the one already running, or a new one (single flight)."""
        state = self._state(provider)
        if state.inflight is None:
            state.fetch_count += 1
            state.inflight = asyncio.create_task(self._refresh(provider, state), name=f"jwks:{provider.name}")
        return state.inflight

    async def _refresh(self, provider: Provider, state: _State) -> None:
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                keys = await self._fetch(provider)
        except _FetchError as exc:
            self._failed(provider, state, str(exc))
        except TimeoutError:
            self._failed(provider, state, f"timed out after {FETCH_TIMEOUT_SECONDS:g} s")
        except Exception as exc:  # the task is shared and awaited by requests: it must never raise
            self._failed(provider, state, f"unexpected {type(exc).__name__}")
        else:
            state.keys_by_kid = _index(keys)
            state.fetched_at = self._clock()
            state.last_error = None
            log.info("fetched %d signing keys for provider %s", len(keys), provider.name)
        finally:
            state.inflight = None

    @staticmethod
    def _failed(provider: Provider, state: _State, error: str) -> None:
        # Working keys stay: an issuer outage must not turn into rejecting every token.
        state.last_error = error
        log.warning("could not fetch signing keys for provider %s: %s", provider.name, error)

    async def _fetch(self, provider: Provider) -> list[_Key]:
        jwks_uri = provider.jwks_uri
        if jwks_uri is None:
            jwks_uri = await self._discover(provider)
        return _parse_jwks(await self._get_json(jwks_uri, "JWKS"))

    async def _discover(self, provider: Provider) -> str:
        document = await self._get_json(provider.discovery_url, "discovery")
        # An issuer mismatch means the document describes someone else (OpenID Connect Discovery §4.3).
        issuer = document.get("issuer")
        if issuer != provider.issuer:
            raise _FetchError(
                f"discovery {_safe_url(provider.discovery_url)}: issuer {issuer!r} is not the configured issuer "
                f"{provider.issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise _FetchError(f"discovery {_safe_url(provider.discovery_url)}: no jwks_uri")
        return jwks_uri

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        _require_secure(url, what)
        try:
            # No redirects: one to plain http (or to another host) would dodge the https rule.
            async with self._client.stream(
                "GET",
                url,
                headers={"Accept": "application/json"},
                timeout=FETCH_TIMEOUT_SECONDS,
                follow_redirects=False,
            ) as response:
                if response.status_code != 200:
                    raise _FetchError(f"{what} {_safe_url(url)}: HTTP {response.status_code}")
                body = await _read_limited(response, what, url)
        except httpx.HTTPError as exc:
            raise _FetchError(f"{what} {_safe_url(url)}: {type(exc).__name__}: {exc}") from exc
        try:
            document = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _FetchError(f"{what} {_safe_url(url)}: not JSON") from exc
        if not isinstance(document, dict):
            raise _FetchError(f"{what} {_safe_url(url)}: not a JSON object")
        return document


async def _read_limited(response: httpx.Response, what: str, url: str) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_JWKS_BYTES:
        raise _FetchError(f"{what} {_safe_url(url)}: larger than {MAX_JWKS_BYTES} bytes")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_JWKS_BYTES:
            raise _FetchError(f"{what} {_safe_url(url)}: larger than {MAX_JWKS_BYTES} bytes")
    return bytes(body)


def _require_secure(url: str, what: str) -> None:
    """https, or http to a loopback host (the demo and tests); anything else could be rewritten on the way."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and _is_loopback(parts.hostname):
        return
    raise _FetchError(f"{what} {_safe_url(url)}: refused, keys are fetched over https only (or http to loopback)")


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _safe_url(url: str) -> str:
    # A URL in an error message loses its query and credentials: either could hold a secret.
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _parse_jwks(document: dict[str, Any]) -> list[_Key]:
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise _FetchError("JWKS: no `keys` list")
    if len(raw_keys) > MAX_JWKS_KEYS:
        raise _FetchError(f"JWKS: {len(raw_keys)} keys, more than {MAX_JWKS_KEYS}")
    keys = [key for key in map(_parse_key, raw_keys) if key is not None]
    if not keys:
        # Treated as a failed fetch so it cannot replace working keys with nothing.
        raise _FetchError("JWKS: no usable signing keys")
    return keys


def _parse_key(raw: object) -> _Key | None:
    """A usable public signing key, or None (dropped): oct, encryption-only, private, unknown, short or broken keys."""
    if not isinstance(raw, dict) or "d" in raw:  # "d": private material has no business in a JWKS
        return None
    if raw.get("use", "sig") != "sig" or not isinstance(raw.get("kid", ""), str):
        return None
    ops = raw.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    algorithms = _fitting_algorithms(raw)
    if not algorithms:
        return None
    key = _Key(raw, algorithms)
    # Load once now so a key pyjwt cannot read is dropped at fetch, not discovered per request; and refuse keys
    # too short to trust (RSA under 2048 bits), which pyjwt would otherwise only warn about on every decode.
    loaded = key.for_algorithm(min(algorithms))
    if loaded is None or loaded.Algorithm.check_key_length(loaded.key) is not None:
        return None
    return key


def _fitting_algorithms(raw: dict[str, Any]) -> frozenset[str]:
    kty, crv, declared = raw.get("kty"), raw.get("crv"), raw.get("alg")
    return frozenset(
        alg
        for alg, (need_kty, curves) in _ALGORITHM_KEYS.items()
        if kty == need_kty and (curves is None or crv in curves) and (declared is None or declared == alg)
    )


def _index(keys: list[_Key]) -> dict[str | None, tuple[_Key, ...]]:
    by_kid: dict[str | None, list[_Key]] = {}
    for key in keys:
        kid = key.kid
        if kid is not None:
            by_kid.setdefault(kid, []).append(key)
    index: dict[str | None, tuple[_Key, ...]] = {kid: tuple(group) for kid, group in by_kid.items()}
    if len(keys) == 1:
        index[None] = (keys[0],)  # a token without kid may use the only key, never pick among several
    return index


def _find(state: _State, kid: str | None, alg: str) -> jwt.PyJWK | None:
    for key in state.keys_by_kid.get(kid, ()):
        found = key.for_algorithm(alg)
        if found is not None:
            return found
    return None
