"""Opaque tokens: ask the provider's RFC 7662 introspection endpoint, and cache the answer by token digest.

An active answer is cached until the token's `exp`, at most the provider's `introspection.cache`; an inactive (or
otherwise refused) answer for `introspection.inactive_cache`. A failure to get an answer (unreachable, timeout, an
HTTP error, a response that is not an introspection response) is never cached and never a 401: the token may be
fine, so it is INTROSPECTION_UNAVAILABLE (503), counted through `on_failure(provider, error)`.

Concurrent requests with the same token share one introspection call. Per provider, at most
`introspection.max_in_flight` calls are in flight at once (a flood of invented tokens queues here instead of
multiplying at the authorization server), and at most `introspection.max_waiting` requests wait for an answer at
once: the next is INTROSPECTION_UNAVAILABLE at once, counted as `overloaded`. Token checks come before a route's
`max_concurrent`, so without this bound a slow or hung endpoint let a flood of random tokens hold a request each
(~14 KiB) for the whole timeout, and made a legitimate new token wait behind them.

Answers are cached per `Profile`: the provider as the policy configures it and the claims its rules can read. A
reload that changes either makes a new profile and drops the old one's answers (`retain`), so an answer judged under
the old audiences is never reused. What others send is bounded: an answer over `MAX_ANSWER_BYTES` is a failure (read
as it arrives, never buffered whole), a cached answer keeps only the claims the rules and identity headers can read,
and the cache holds at most `cache_bytes` of them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import quote_plus

import httpx
from cachetools import TLRUCache

from sidecar.auth.issuer_http import FetchError, post_json, safe_url
from sidecar.auth.timeclaims import check_times
from sidecar.policy.model import Anyone, Identity, Introspection, Policy, Provider
from sidecar.reasons import Reason, Rejection

__all__ = [
    "CLAIMS_ALWAYS_KEPT",
    "INTROSPECTION_TIMEOUT_SECONDS",
    "MAX_ANSWER_BYTES",
    "Introspector",
    "Profile",
    "claims_read",
]

log = logging.getLogger(__name__)

INTROSPECTION_TIMEOUT_SECONDS: Final = 5.0  # the caller is waiting: a slow answer is a failure, not a long stall
# RFC 7662 answers are a few hundred bytes; Entra-sized claim sets (200 groups) stay under 16 KiB.
MAX_ANSWER_BYTES: Final = 64 * 1024
DEFAULT_CACHE_BYTES: Final = 16 << 20
_ENTRY_OVERHEAD: Final = 1024  # what one cached answer costs beyond its claims (key, objects), counted in cache_bytes

# What the sidecar itself reads of an identity: allow rules (users, apps, groups, scopes, user/app tokens), identity
# headers, rate-limit keys and access logs. Claims named in a rule's `claims:` are kept on top (see claims_read).
CLAIMS_ALWAYS_KEPT: Final = frozenset(
    {
        "sub", "oid", "upn", "preferred_username", "azp", "appid", "client_id", "tid", "roles", "groups", "scp",
        "scope", "idtyp", "iss", "aud", "exp", "nbf", "iat",
    }
)  # fmt: skip


class Profile:
    """One introspection provider as the current policy has it, with the claims its rules can read (None: all).
    Compared by identity: cached answers belong to the profile they were judged under."""

    __slots__ = ("claims", "provider", "retired")

    def __init__(self, provider: Provider, claims: frozenset[str] | None) -> None:
        self.provider = provider
        self.claims = claims
        self.retired = False  # no policy uses it any more: its answers are dropped and never cached again


def claims_read(policy: Policy) -> dict[str, frozenset[str]]:
    """Per provider, the claims that anything of `policy` can read: CLAIMS_ALWAYS_KEPT and every claim a rule names."""
    named: dict[str, set[str]] = {name: set() for name in policy.providers}
    for route in policy.routes:
        if isinstance(route.allow, Anyone):
            continue
        for rule in route.allow:
            named.setdefault(rule.provider, set()).update(requirement.name for requirement in rule.claims)
    return {name: CLAIMS_ALWAYS_KEPT | names for name, names in named.items()}


@dataclass(frozen=True, slots=True)
class _Answer:
    identity: Identity | None
    reason: Reason | None  # why the token is refused, when it is
    until: float  # cache deadline (clock seconds)
    size: int = _ENTRY_OVERHEAD  # what it counts against cache_bytes


_Key = tuple[Profile, bytes]  # the profile judged under, token digest
OVERLOADED: Final = "overloaded"  # the error label of a request refused because max_waiting requests already wait


class _Lane:
    """One provider's calls: at most `max_in_flight` at once; `waiting` counts the requests waiting for them."""

    __slots__ = ("max_in_flight", "slots", "waiting")

    def __init__(self, max_in_flight: int) -> None:
        self.max_in_flight = max_in_flight
        self.slots = asyncio.Semaphore(max_in_flight)
        self.waiting = 0


class Introspector:
    """Asks RFC 7662 endpoints about tokens through an injected `httpx.AsyncClient`; one per process."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
        *,
        on_failure: Callable[[str, str], None] | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        client_for: Callable[[Provider], httpx.AsyncClient] | None = None,
    ) -> None:
        self._client = client
        self._client_for = client_for  # a provider with its own `tls:` (private CA, client certificate) has its own
        self._clock = clock
        self._on_failure = on_failure
        self._cache: TLRUCache[_Key, _Answer] = TLRUCache(
            maxsize=cache_bytes, ttu=_until, timer=clock, getsizeof=_size_of
        )
        self._inflight: dict[_Key, asyncio.Task[_Answer]] = {}
        self._lanes: dict[str, _Lane] = {}  # by provider name: a reload that keeps the name keeps the count
        self._profiles: dict[tuple[Provider, frozenset[str] | None], Profile] = {}

    def profile(self, provider: Provider, claims: frozenset[str] | None = None) -> Profile:
        """The profile for this provider configuration and kept claims: the same object for equal ones, so that a
        reload that changes neither keeps its cached answers."""
        found = self._profiles.get((provider, claims))
        if found is None:
            found = self._profiles[(provider, claims)] = Profile(provider, claims)
        return found

    def retain(self, profiles: Iterable[Profile]) -> None:
        """Keep only `profiles` (the current policy's): every other profile's cached answers are dropped, and an
        answer still in flight for one is not cached when it arrives."""
        keep = {id(profile) for profile in profiles}
        for ident, profile in list(self._profiles.items()):
            if id(profile) not in keep:
                profile.retired = True
                del self._profiles[ident]
        for key in [key for key in list(self._cache.keys()) if key[0].retired]:
            self._cache.pop(key, None)

    async def introspect(self, provider: Provider | Profile, token: str) -> Identity:
        """The identity the endpoint vouches for; raises Rejection (TOKEN_INACTIVE, EXPIRED, NOT_YET_VALID,
        WRONG_AUDIENCE, or INTROSPECTION_UNAVAILABLE). A bare Provider keeps every claim of the answer."""
        profile = provider if isinstance(provider, Profile) else self.profile(provider)
        endpoint = profile.provider.introspection
        if endpoint is None:  # pragma: no cover - the verifier sends only introspection providers here
            raise Rejection(Reason.INTROSPECTION_UNAVAILABLE)
        key = (profile, hashlib.sha256(token.encode()).digest())
        answer = self._cache.get(key)
        if answer is None:
            lane = self._lane(profile.provider.name, endpoint)
            if lane.waiting >= endpoint.max_waiting:  # refused before it costs a task or a call
                if self._on_failure is not None:
                    self._on_failure(profile.provider.name, OVERLOADED)
                raise Rejection(Reason.INTROSPECTION_UNAVAILABLE)
            task = self._inflight.get(key)
            if task is None:
                name = f"introspect:{profile.provider.name}"
                task = asyncio.create_task(self._ask(profile, endpoint, token, lane), name=name)
                self._inflight[key] = task
                task.add_done_callback(lambda _: self._inflight.pop(key, None))
            lane.waiting += 1
            try:
                # shield: a caller that goes away must not cancel the call the others share.
                answer = await asyncio.shield(task)
            finally:
                lane.waiting -= 1
            if not profile.retired:
                self._cache[key] = answer
        if answer.identity is None:
            raise Rejection(answer.reason or Reason.TOKEN_INACTIVE)
        return answer.identity

    def _lane(self, provider: str, endpoint: Introspection) -> _Lane:
        """The provider's lane; a new one when a reload changed its max_in_flight (calls under way keep theirs)."""
        lane = self._lanes.get(provider)
        if lane is None or lane.max_in_flight != endpoint.max_in_flight:
            lane = self._lanes[provider] = _Lane(endpoint.max_in_flight)
        return lane

    async def _ask(self, profile: Profile, endpoint: Introspection, token: str, lane: _Lane) -> _Answer:
        provider = profile.provider
        try:
            async with asyncio.timeout(INTROSPECTION_TIMEOUT_SECONDS):
                async with lane.slots:
                    document = await post_json(
                        self._client_for(provider) if self._client_for is not None else self._client,
                        endpoint.endpoint,
                        "introspection",
                        {"token": token, "token_type_hint": "access_token"},
                        {"Authorization": _basic(endpoint.client_id, endpoint.client_secret)},
                        max_bytes=MAX_ANSWER_BYTES,
                    )
        except FetchError as exc:
            return self._failed(provider, exc.kind, str(exc))
        except TimeoutError:
            return self._failed(provider, "timeout", f"introspection {safe_url(endpoint.endpoint)}: timed out")
        except Exception as exc:  # shared by requests: it must answer, never raise
            return self._failed(provider, "bad_response", f"unexpected {type(exc).__name__}")
        try:
            return self._judge(profile, endpoint, document.body)
        except _BadResponse as exc:
            return self._failed(provider, "bad_response", f"introspection {safe_url(endpoint.endpoint)}: {exc}")

    def _judge(self, profile: Profile, endpoint: Introspection, body: Mapping[str, object]) -> _Answer:
        provider = profile.provider
        now = self._clock()
        active = body.get("active")
        if not isinstance(active, bool):
            raise _BadResponse("`active` is not true or false")
        refused_until = now + endpoint.inactive_cache
        if not active:
            return _Answer(None, Reason.TOKEN_INACTIVE, refused_until)
        try:
            exp = check_times(body, now, provider.leeway, require_exp=False)
        except Rejection as rejection:
            if rejection.reason is Reason.MALFORMED_TOKEN:
                raise _BadResponse("exp, nbf or iat is not a number") from rejection
            return _Answer(None, rejection.reason, refused_until)
        if provider.audiences and provider.audiences.isdisjoint(_audiences(body.get("aud"))):
            return _Answer(None, Reason.WRONG_AUDIENCE, refused_until)
        until = now + endpoint.cache if exp is None else min(exp, now + endpoint.cache)
        identity = _identity(provider, body, exp if exp is not None else until, profile.claims)
        return _Answer(identity, None, until, _ENTRY_OVERHEAD + _claims_size(identity.claims))

    def _failed(self, provider: Provider, kind: str, message: str) -> _Answer:
        log.warning("token introspection failed", extra={"fields": {"provider": provider.name, "error": message}})
        if self._on_failure is not None:
            self._on_failure(provider.name, kind)
        return _Answer(None, Reason.INTROSPECTION_UNAVAILABLE, float("-inf"))  # expired at once: never cached


class _BadResponse(Exception):
    """The endpoint answered 200 with something that is not an introspection response."""


def _until(_key: _Key, answer: _Answer, _now: float) -> float:
    return answer.until


def _size_of(answer: _Answer) -> int:
    return answer.size


def _claims_size(claims: Mapping[str, object]) -> int:
    return len(json.dumps(claims, separators=(",", ":"), default=str))


def _basic(client_id: str, secret: str) -> str:
    # RFC 7662 §2.1 with RFC 6749 §2.3.1: each half form-encoded before base64.
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _audiences(aud: object) -> frozenset[str]:
    if isinstance(aud, str):
        return frozenset(aud.split(" "))  # some servers send a space-separated string
    if isinstance(aud, list):
        return frozenset(item for item in aud if isinstance(item, str))
    return frozenset()


def _identity(
    provider: Provider, body: Mapping[str, object], expires_at: float, kept: frozenset[str] | None
) -> Identity:
    """The answer as an identity, with only the `kept` claims (None: all but `active`)."""
    claims = {name: value for name, value in body.items() if name != "active" and (kept is None or name in kept)}
    # RFC 7662 calls the human-readable name `username`; `users` entries with "@" match preferred_username.
    username = body.get("username")
    if isinstance(username, str) and "preferred_username" not in claims:
        claims["preferred_username"] = username
    return Identity(provider=provider.name, claims=MappingProxyType(claims), expires_at=expires_at)
