"""Opaque tokens: ask the provider's RFC 7662 introspection endpoint, and cache the answer by token digest.

An active answer is cached until the token's `exp`, at most the provider's `introspection.cache`; an inactive (or
otherwise refused) answer for `introspection.inactive_cache`. A failure to get an answer (unreachable, timeout, an
HTTP error, a response that is not an introspection response) is never cached and never a 401: the token may be
fine, so it is INTROSPECTION_UNAVAILABLE (503), counted through `on_failure(provider, error)`.

Concurrent requests with the same token share one introspection call, and at most `max_concurrent` calls are in
flight at once, so a flood of invented tokens queues here instead of multiplying at the authorization server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final
from urllib.parse import quote_plus

import httpx
from cachetools import TLRUCache

from sidecar.decision import Reason, Rejection
from sidecar.fetch import FetchError, post_json, safe_url
from sidecar.policy.model import Identity, Introspection, Provider
from sidecar.timeclaims import check_times

__all__ = ["INTROSPECTION_TIMEOUT_SECONDS", "Introspector"]

log = logging.getLogger(__name__)

INTROSPECTION_TIMEOUT_SECONDS: Final = 5.0  # the caller is waiting: a slow answer is a failure, not a long stall


@dataclass(frozen=True, slots=True)
class _Answer:
    identity: Identity | None
    reason: Reason | None  # why the token is refused, when it is
    until: float  # cache deadline (clock seconds)


_Key = tuple[str, str, bytes]  # endpoint, client id, token digest


class Introspector:
    """Asks RFC 7662 endpoints about tokens through an injected `httpx.AsyncClient`; one per process."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
        *,
        on_failure: Callable[[str, str], None] | None = None,
        cache_size: int = 10_000,
        max_concurrent: int = 64,
    ) -> None:
        self._client = client
        self._clock = clock
        self._on_failure = on_failure
        self._cache: TLRUCache[_Key, _Answer] = TLRUCache(maxsize=cache_size, ttu=_until, timer=clock)
        self._inflight: dict[_Key, asyncio.Task[_Answer]] = {}
        self._slots = asyncio.Semaphore(max_concurrent)

    async def introspect(self, provider: Provider, token: str) -> Identity:
        """The identity the endpoint vouches for; raises Rejection (TOKEN_INACTIVE, EXPIRED, NOT_YET_VALID,
        WRONG_AUDIENCE, or INTROSPECTION_UNAVAILABLE)."""
        endpoint = provider.introspection
        if endpoint is None:  # pragma: no cover - the verifier sends only introspection providers here
            raise Rejection(Reason.INTROSPECTION_UNAVAILABLE)
        key = (endpoint.endpoint, endpoint.client_id, hashlib.sha256(token.encode()).digest())
        answer = self._cache.get(key)
        if answer is None:
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.create_task(self._ask(provider, endpoint, token), name=f"introspect:{provider.name}")
                self._inflight[key] = task
                task.add_done_callback(lambda _: self._inflight.pop(key, None))
            # shield: a caller that goes away must not cancel the call the others share.
            answer = await asyncio.shield(task)
            self._cache[key] = answer
        if answer.identity is None:
            raise Rejection(answer.reason or Reason.TOKEN_INACTIVE)
        return answer.identity

    async def _ask(self, provider: Provider, endpoint: Introspection, token: str) -> _Answer:
        try:
            async with asyncio.timeout(INTROSPECTION_TIMEOUT_SECONDS):
                async with self._slots:
                    document = await post_json(
                        self._client,
                        endpoint.endpoint,
                        "introspection",
                        {"token": token, "token_type_hint": "access_token"},
                        {"Authorization": _basic(endpoint.client_id, endpoint.client_secret)},
                    )
        except FetchError as exc:
            return self._failed(provider, exc.kind, str(exc))
        except TimeoutError:
            return self._failed(provider, "timeout", f"introspection {safe_url(endpoint.endpoint)}: timed out")
        except Exception as exc:  # shared by requests: it must answer, never raise
            return self._failed(provider, "bad_response", f"unexpected {type(exc).__name__}")
        try:
            return self._judge(provider, endpoint, document.body)
        except _BadResponse as exc:
            return self._failed(provider, "bad_response", f"introspection {safe_url(endpoint.endpoint)}: {exc}")

    def _judge(self, provider: Provider, endpoint: Introspection, body: Mapping[str, object]) -> _Answer:
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
        return _Answer(_identity(provider, body, exp if exp is not None else until), None, until)

    def _failed(self, provider: Provider, kind: str, message: str) -> _Answer:
        log.warning("token introspection failed", extra={"fields": {"provider": provider.name, "error": message}})
        if self._on_failure is not None:
            self._on_failure(provider.name, kind)
        return _Answer(None, Reason.INTROSPECTION_UNAVAILABLE, float("-inf"))  # expired at once: never cached


class _BadResponse(Exception):
    """The endpoint answered 200 with something that is not an introspection response."""


def _until(_key: _Key, answer: _Answer, _now: float) -> float:
    return answer.until


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


def _identity(provider: Provider, body: Mapping[str, object], expires_at: float) -> Identity:
    claims = {name: value for name, value in body.items() if name != "active"}
    # RFC 7662 calls the human-readable name `username`; `users` entries with "@" match preferred_username.
    username = body.get("username")
    if isinstance(username, str) and "preferred_username" not in claims:
        claims["preferred_username"] = username
    return Identity(provider=provider.name, claims=MappingProxyType(claims), expires_at=expires_at)
