"""Signing keys per provider: discovery, JWKS fetch, scheduled refresh, and the rate-limited kid-miss refetch.

State is per key source (discovery URL and configured jwks_uri), so it survives policy reloads. It is not a TTL
cache: keys are replaced only by a successful fetch, so while the issuer is down the last good keys keep verifying,
for at most the provider's `max_stale`. Three things fetch, always as one shared task per source (single flight):
- `prime()`: start-up and reload, once, whatever the schedule;
- the scheduler (`run_refresh`): each source again after its interval, the issuer's Cache-Control max-age clamped to
  [jwks_refresh.min, jwks_refresh.max] minus up to 10 % jitter; after a failure, backoff 1 s, 2 s, ... up to 30 s;
- `key()` on an unknown kid: at most once per `jwks_min_refresh`. Only these kid-miss fetches count against that
  limit, so a key rotated in right after a start-up or scheduled fetch is followed without a failed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Protocol

import httpx
import jwt

from sidecar.auth.discovery import KeySet, fetch_key_set
from sidecar.auth.issuer_http import FETCH_TIMEOUT_SECONDS, FetchError
from sidecar.auth.jwks import JwksError, KeyIndex, find
from sidecar.observe.metrics import KeySetStatus
from sidecar.policy.model import Provider
from sidecar.reasons import Reason, Rejection

__all__ = ["KeyObserver", "KeySetStatus", "KeyStore"]

log = logging.getLogger(__name__)

_RETRY_FIRST: Final = 1.0
_RETRY_MAX: Final = 30.0
_JITTER: Final = 0.1  # scheduled fetches come up to 10 % early, so a fleet of sidecars spreads out
_IDLE: Final = 60.0  # the scheduler looks again at least this often (a reload may add providers)
_OBSERVE_EVERY: Final = 5.0  # how fresh the observer's age and key counts are (the metrics)


class KeyObserver(Protocol):
    """Told of every finished fetch, and (by the scheduler, every few seconds) of every provider's keys."""

    def keys_fetched(self, provider: str, ok: bool) -> None: ...

    def keys_observed(self, statuses: Iterable[KeySetStatus]) -> None: ...


@dataclass(slots=True)
class _State:
    """What we know of one key source. Replaced field by field by a fetch; never expired by time."""

    keys: KeyIndex = field(default_factory=dict)
    key_count: int = 0
    fetched_at: float | None = None  # last successful fetch (KeyStore clock); None: never
    missed_at: float | None = None  # last fetch started by an unknown kid: the only ones rate-limited
    last_error: str | None = None
    fetch_count: int = 0
    failures: int = 0  # consecutive
    next_at: float | None = None  # when the scheduler fetches again; None: at once
    inflight: asyncio.Task[None] | None = None
    expired_logged: bool = False


class KeyStore:
    """The verification keys of every provider, fetched through an injected `httpx.AsyncClient`.

    `observer` (the metrics) hears of every fetch and, from the scheduler, of every provider's keys; `rand` gives
    the jitter (tests pin it)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
        *,
        observer: KeyObserver | None = None,
        rand: Callable[[], float] = random.random,
        client_for: Callable[[Provider], httpx.AsyncClient] | None = None,
    ) -> None:
        self._client = client
        self._client_for = client_for  # a provider with its own `tls:` (private CA, client certificate) has its own
        self._clock = clock
        self._observer = observer
        self._rand = rand
        self._states: dict[tuple[str, str | None], _State] = {}
        self._wake = asyncio.Event()  # a fetch finished: the scheduler recomputes when the next one is due
        # Counts fetches that took a key away (removed, or its material changed under the same kid). A verifier
        # compares it on every call and drops its verified-token cache when it moved: a token verified with a key
        # the issuer no longer publishes is verified again, and refused. One integer compare per request.
        self.generation = 0

    async def prime(self, providers: Iterable[Provider]) -> None:
        """Fetch every provider's keys once, concurrently, whatever the schedule (start-up, reload).

        Providers sharing a key source share one fetch. Failures are recorded in `last_error`, never raised."""
        tasks = {id(self._state(p)): self._start_fetch(p) for p in _jwt(providers)}
        if tasks:
            await asyncio.gather(*(asyncio.shield(task) for task in tasks.values()))

    def ready(self, providers: Iterable[Provider]) -> bool:
        """What `/readyz` reports: every provider's keys were fetched and are not older than its `max_stale`.
        Stale keys within `max_stale` are ready: they still verify."""
        return all(self._usable(self._state(p), p) for p in _jwt(providers))

    def fetch_count(self, provider: Provider) -> int:
        return self._state(provider).fetch_count

    def last_error(self, provider: Provider) -> str | None:
        return self._state(provider).last_error

    def status(self, providers: Iterable[Provider]) -> list[KeySetStatus]:
        now = self._clock()
        found = []
        for provider in _jwt(providers):
            state = self._state(provider)
            age = None if state.fetched_at is None else now - state.fetched_at
            stale = state.fetched_at is not None and state.last_error is not None
            found.append(KeySetStatus(provider.name, age, state.key_count, stale))
        return found

    async def key(self, provider: Provider, kid: str | None, alg: str) -> jwt.PyJWK:
        """The provider's first key for `kid` that fits `alg` (see `keys`)."""
        return (await self.keys(provider, kid, alg))[0]

    async def keys(self, provider: Provider, kid: str | None, alg: str) -> tuple[jwt.PyJWK, ...]:
        """The provider's keys for `kid` that fit `alg` (one, or up to MAX_KEYS_PER_KID when several share the kid);
        raises Rejection(UNKNOWN_KEY or KEYS_UNAVAILABLE).

        A key that exists under `kid` but does not fit `alg` (another key type or curve, a JWK `alg` naming another
        algorithm) counts as absent: UNKNOWN_KEY, not FORBIDDEN_ALGORITHM, because the algorithm itself is one the
        provider accepts; it is this issuer's key set that has no such key. With no `kid` the provider's only key is
        used, and only when it publishes exactly one: trying every key would let one token cost N signature checks.
        Keys older than `max_stale` are not used at all (KEYS_UNAVAILABLE, as if never fetched).
        """
        state = self._state(provider)
        found = find(state.keys, kid, alg) if self._usable(state, provider) else ()
        if found:
            return found
        task = state.inflight
        if task is None and self._may_refetch(state, provider):
            state.missed_at = self._clock()
            task = self._start_fetch(provider)
        if task is not None:
            # shield: a caller that goes away (client disconnect) must not cancel the fetch the others share.
            await asyncio.shield(task)
            found = find(state.keys, kid, alg) if self._usable(state, provider) else ()
            if found:
                return found
        if not self._usable(state, provider):
            raise Rejection(Reason.KEYS_UNAVAILABLE)
        raise Rejection(Reason.UNKNOWN_KEY)

    async def refresh_due(self, providers: Iterable[Provider]) -> float:
        """One pass of the scheduler: fetch every source whose time has come (and wait for those fetches).
        Returns the seconds until the next one is due (infinite when nothing is scheduled)."""
        now = self._clock()
        sources: dict[int, tuple[_State, Provider]] = {}
        for provider in _jwt(providers):
            state = self._state(provider)
            sources.setdefault(id(state), (state, provider))
        started, wait = [], math.inf
        for state, provider in sources.values():
            due = now if state.next_at is None else state.next_at
            if state.inflight is not None:
                continue  # its end wakes the scheduler
            if due <= now:
                started.append(self._start_fetch(provider))
            else:
                wait = min(wait, due - now)
        if started:
            await asyncio.gather(*(asyncio.shield(task) for task in started))
            return 0.0  # look again: the fetches set new due times
        return wait

    async def run_refresh(self, providers: Callable[[], Iterable[Provider]]) -> None:
        """The scheduler: runs until cancelled, and survives anything (an error is logged, then it goes on).
        `providers()` is asked on every pass, so a reloaded policy's providers are followed."""
        while True:
            self._wake.clear()
            try:
                current = list(providers())
                delay = min(await self.refresh_due(current), _IDLE)
                if self._observer is not None:
                    self._observer.keys_observed(self.status(current))
                    delay = min(delay, _OBSERVE_EVERY)
            except Exception:
                log.exception("key refresh pass failed; retrying")
                delay = _RETRY_FIRST
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    def _state(self, provider: Provider) -> _State:
        # Keyed by where the keys come from, not by provider name: a reload that keeps the provider keeps its keys.
        ident = (provider.discovery_url, provider.jwks_uri)
        state = self._states.get(ident)
        if state is None:
            state = self._states[ident] = _State()
        return state

    def _usable(self, state: _State, provider: Provider) -> bool:
        return state.fetched_at is not None and self._clock() - state.fetched_at <= provider.max_stale

    def _may_refetch(self, state: _State, provider: Provider) -> bool:
        return state.missed_at is None or self._clock() - state.missed_at >= provider.jwks_min_refresh

    def _start_fetch(self, provider: Provider) -> asyncio.Task[None]:
        """The source's fetch task: the one already running, or a new one (single flight)."""
        state = self._state(provider)
        if state.inflight is None:
            state.fetch_count += 1
            state.inflight = asyncio.create_task(self._refresh(provider, state), name=f"jwks:{provider.name}")
        return state.inflight

    async def _refresh(self, provider: Provider, state: _State) -> None:
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                client = self._client_for(provider) if self._client_for is not None else self._client
                found = await fetch_key_set(client, provider)
        except (FetchError, JwksError) as exc:
            self._failed(provider, state, str(exc))
        except TimeoutError:
            self._failed(provider, state, f"timed out after {FETCH_TIMEOUT_SECONDS:g} s")
        except Exception as exc:  # the task is shared and awaited by requests: it must never raise
            self._failed(provider, state, f"unexpected {type(exc).__name__}")
        else:
            self._succeeded(provider, state, found)
        finally:
            state.inflight = None
            self._wake.set()

    def _succeeded(self, provider: Provider, state: _State, found: KeySet) -> None:
        now = self._clock()
        was_stale = state.fetched_at is not None and state.last_error is not None
        before, after = set(state.keys) - {None}, set(found.keys) - {None}
        if not _identities(found.keys) >= _identities(state.keys):
            self.generation += 1
        state.keys, state.key_count, state.fetched_at, state.last_error = found.keys, found.count, now, None
        state.failures, state.expired_logged = 0, False
        state.next_at = now + self._interval(provider, found.max_age)
        self._tell(provider, True)
        fields = {"provider": provider.name, "keys": found.count}
        if before != after:
            added, removed = sorted(map(_short, after - before)), sorted(map(_short, before - after))
            log.info("signing keys fetched", extra={"fields": {**fields, "added": added, "removed": removed}})
        elif was_stale:
            log.info("signing keys fresh again", extra={"fields": fields})
        else:
            log.debug("signing keys unchanged", extra={"fields": fields})

    def _failed(self, provider: Provider, state: _State, error: str) -> None:
        # Working keys stay: an issuer outage must not turn into rejecting every token.
        now = self._clock()
        state.last_error = error
        state.failures += 1
        backoff = min(_RETRY_FIRST * 2 ** min(state.failures - 1, 16), _RETRY_MAX, provider.jwks_refresh_max)
        state.next_at = now + backoff * (1 - _JITTER * self._rand())
        self._tell(provider, False)
        fields: dict[str, object] = {"provider": provider.name, "error": error, "failures": state.failures}
        if state.fetched_at is None:
            _throttled(state.failures, "signing keys not fetched", fields)
            return
        age = now - state.fetched_at
        fields.update(age_s=round(age, 3), max_stale_s=provider.max_stale)
        if age <= provider.max_stale:
            _throttled(state.failures, "signing keys stale: verifying with the last good keys", fields)
        elif not state.expired_logged:
            state.expired_logged = True
            log.error(
                "signing keys older than max_stale: tokens refused (503) until a fetch succeeds",
                extra={"fields": fields},
            )

    def _interval(self, provider: Provider, max_age: float | None) -> float:
        low, high = provider.jwks_refresh_min, provider.jwks_refresh_max
        base = high if max_age is None else min(max(max_age, low), high)
        return max(base * (1 - _JITTER * self._rand()), low)

    def _tell(self, provider: Provider, ok: bool) -> None:
        if self._observer is not None:
            self._observer.keys_fetched(provider.name, ok)


def _jwt(providers: Iterable[Provider]) -> list[Provider]:
    """The providers that have keys: introspection providers ask their endpoint instead."""
    return [p for p in providers if p.introspection is None]


def _throttled(failures: int, message: str, fields: dict[str, object]) -> None:
    """A warning on the 1st, 2nd, 4th, 8th... failure in a row, debug otherwise: an outage of hours stays readable."""
    level = logging.WARNING if failures & (failures - 1) == 0 else logging.DEBUG
    log.log(level, message, extra={"fields": fields})


def _identities(keys: KeyIndex) -> set[tuple[object, ...]]:
    return {key.identity for group in keys.values() for key in group}


def _short(kid: str | None) -> str:
    return (kid or "")[:64]
