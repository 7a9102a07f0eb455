"""What a running sidecar holds: the current policy snapshot (swapped whole), keys, upstream pool, metrics."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from sidecar.auth.introspect import Introspector, claims_read
from sidecar.auth.keys import KeyStore
from sidecar.auth.verify import Verifier
from sidecar.edge.forward import Forwarder
from sidecar.edge.upstream_tls import BuiltTls, ControlClients, build_tls, control_client
from sidecar.observe.log import logger
from sidecar.observe.metrics import Metrics
from sidecar.policy.model import Policy

if TYPE_CHECKING:  # imported when first used: see Runtime.limiter
    from sidecar.ratelimit.limiter import RateLimiter

__all__ = ["Runtime", "Snapshot", "policy_hash"]

_READINESS_CHECK: Final = 1.0
_READINESS_CHECK_STARTING: Final = 0.1  # start-up: say "ready" soon after the keys arrive


def policy_hash(text: bytes) -> str:
    """What `sidecar_config_info{hash}` shows: the first 12 hex digits of the file's sha256 (as `sha256sum`)."""
    return hashlib.sha256(text).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A policy and the verifier built for its providers. A request reads one snapshot and keeps it to the end,
    so a reload never splits a request between two policies."""

    policy: Policy
    verifier: Verifier
    hash: str
    upstream_tls: Mapping[str, ssl.SSLContext] = field(default_factory=dict)  # by route name: own `tls:` only


class Runtime:
    """One per process."""

    def __init__(
        self,
        policy: Policy,
        policy_digest: str,
        metrics: Metrics,
        keys: KeyStore,
        forwarder: Forwarder,
        introspector: Introspector | None = None,  # asks RFC 7662 endpoints; shared by every snapshot (its cache)
        control: ControlClients | None = None,  # the control plane's httpx clients (providers' own `tls:`)
    ):
        self.metrics = metrics
        self._control = control
        self.keys = keys
        self.forwarder = forwarder
        self.introspector = introspector
        self._refreshing: asyncio.Future[None] | None = None  # the scheduled key refresh (KeyStore.run_refresh)
        self.current = self._snapshot(policy, policy_digest, self._built(policy))
        self.draining = False  # set on SIGTERM: /readyz answers 503 so that traffic moves elsewhere
        self.audit_all = False  # `--audit`: every route in audit mode
        self._limiter: RateLimiter | None = None  # per-caller counts (this process's outlive reloads)
        self._fetching: asyncio.Future[None] | None = None
        metrics.config_info.labels(policy_digest).set(1)

    @classmethod
    def create(cls, policy: Policy, policy_digest: str, metrics: Metrics) -> Runtime:
        """Build the runtime inside the running loop; keys are fetched by `fetch_keys()`."""
        control = ControlClients(control_client())
        client, client_for = control.default, control.for_provider
        keys = KeyStore(client, observer=metrics, client_for=client_for)
        introspector = Introspector(client, on_failure=metrics.introspection_failed, client_for=client_for)
        pool = policy.upstream_pool  # sized at start; a reload resizes it (swap)
        forwarder = Forwarder.create(
            pool.max_connections,
            pool.max_per_host or 0,
            pool.idle_timeout,
            metrics.upstream_connections.set,
            pool.route_share,
        )
        forwarder.apply(policy.limits)
        return cls(policy, policy_digest, metrics, keys, forwarder, introspector, control)

    @property
    def limiter(self) -> RateLimiter:
        """Made at the first request a `rate_limit` counts: only a policy with rate limits imports the `limits`
        library (2.3 MiB of RSS per worker)."""
        if self._limiter is None:
            from sidecar.ratelimit.limiter import RateLimiter  # deferred on purpose (see above)

            self._limiter = RateLimiter(store=self.current.policy.rate_limit_store, observer=self.metrics)
        return self._limiter

    def _built(self, policy: Policy) -> BuiltTls:
        """The policy's `tls:` contexts (PolicyError when a file does not load: nothing has changed yet); the
        providers' clients are taken at once, so that keys fetched before the swap use them."""
        built = build_tls(policy)
        if self._control is not None:
            self._control.use(built.providers)
        return built

    def _snapshot(self, policy: Policy, digest: str, built: BuiltTls) -> Snapshot:
        verifier = Verifier(policy.providers, self.keys, introspector=self.introspector, claims=claims_read(policy))
        return Snapshot(policy, verifier, digest, built.routes)

    def fetch_keys(self, on_ready: Callable[[], None] | None = None) -> None:
        """Start the key scheduler once the listeners are up: it fetches every provider's keys at once, then on
        schedule, retrying an issuer that is down with backoff (never a crash). /readyz says 503 until they are in.
        The rate-limit store's checks start here too."""
        # The providers of whichever policy is current: a reload's new providers are followed.
        self._refreshing = asyncio.ensure_future(self.keys.run_refresh(lambda: self.current.policy.providers.values()))
        self._fetching = asyncio.ensure_future(self._watch_readiness(on_ready))
        self._watch_store()

    def _watch_store(self) -> None:
        """With a `rate_limit_store`, each worker checks it in the background from start (without waiting for a
        rate-limited request): sidecar_ratelimit_store_up is true of a quiet worker too."""
        if self.current.policy.rate_limit_store is not None:
            self.limiter.watch_store()

    def ready(self) -> bool:
        return not self.draining and self.keys.ready(self.current.policy.providers.values())

    async def _watch_readiness(self, on_ready: Callable[[], None] | None) -> None:
        """Keeps `sidecar_ready` equal to what /readyz answers, and logs each change (keys in, keys past
        max_stale, drain). The key scheduler does the fetching; this only looks."""
        was_ready: bool | None = None
        while True:
            now_ready = self.ready()
            if now_ready != was_ready:
                self.metrics.ready.set(1 if now_ready else 0)
                fields = {"providers": sorted(self.current.policy.providers)}
                if now_ready:
                    logger.info("ready", extra={"fields": fields})
                    if on_ready is not None:
                        on_ready()
                        on_ready = None
                elif was_ready is not None:
                    logger.warning("not ready", extra={"fields": {**fields, "draining": self.draining}})
                was_ready = now_ready
            await asyncio.sleep(_READINESS_CHECK if now_ready else _READINESS_CHECK_STARTING)

    async def swap(self, policy: Policy, digest: str) -> None:
        """Make `policy` current. Keys of providers it adds are fetched first (bounded by the fetch timeout), so
        its routes work from the first request; requests already running finish under the snapshot they read.
        PolicyError (nothing changed) when a `tls:` file does not load."""
        built = self._built(policy)
        known = self.current.policy.providers.values()
        added = [p for p in policy.providers.values() if p not in known and not self.keys.ready([p])]
        if added:
            await self.keys.prime(added)
        previous = self.current.hash
        self.current = self._snapshot(policy, digest, built)
        if self.introspector is not None:
            # Answers judged under a provider this policy changed (audiences, endpoint, ...) or whose rules now read
            # other claims are dropped; an unchanged provider keeps its cache.
            self.introspector.retain(self.current.verifier.profiles)
        if self._limiter is not None:  # a changed rate_limit_store counts there from now on
            replaced = self._limiter.use(policy.rate_limit_store)
            if replaced is not None:
                await replaced.close()
        self._watch_store()  # a new store is checked at once: the gauge says its health, not the old one's
        pool = policy.upstream_pool
        self.forwarder.pool.resize(pool.max_connections, pool.max_per_host or 0, pool.idle_timeout, pool.route_share)
        self.forwarder.apply(policy.limits)  # min_body_rate: for bodies whose reading starts from now on
        if previous != digest:
            # Set to 0, not removed: in multiprocess mode a removed series would live on in the worker's file.
            self.metrics.config_info.labels(previous).set(0)
            self.metrics.config_info.labels(digest).set(1)

    async def close(self) -> None:
        if self._fetching is not None:
            self._fetching.cancel()
        if self._refreshing is not None:
            self._refreshing.cancel()
        await self.forwarder.close()
        if self._limiter is not None:
            await self._limiter.close()
        if self._control is not None:
            await self._control.close()
