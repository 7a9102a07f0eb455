"""Every metric the sidecar exports, defined here only (prefix `sidecar_`, base units, enum-only labels)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidecar.policy.model import Mode
from sidecar.reasons import Reason

__all__ = ["NO_ROUTE_LABEL", "STORE_ERRORS", "TLS_HANDSHAKE_FAILURES", "KeySetStatus", "Metrics", "method_label"]


class KeySetStatus(NamedTuple):
    """One provider's keys, for the metrics: age of the last good fetch (None: never), how many keys, and whether
    the last fetch failed while older keys serve (stale)."""

    provider: str
    age: float | None
    keys: int
    stale: bool


# Route names match [A-Za-z0-9_.-]+, so this label can never clash with a real route.
NO_ROUTE_LABEL: Final = "(none)"
_KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
# sidecar_ratelimit_store_errors_total{error}: no answer in time, no connection, credentials refused, anything else.
STORE_ERRORS: Final = ("timeout", "unreachable", "auth", "error")
# sidecar_tls_handshake_failures_total{reason} (edge/tls.py classifies).
TLS_HANDSHAKE_FAILURES: Final = (
    "client_certificate",
    "refused_by_client",
    "protocol",
    "timeout",
    "closed",
    "too_many_handshakes",
)
_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def method_label(method: str) -> str:
    """Methods are client-chosen: anything unusual is `OTHER`, so a client cannot mint label values."""
    return method if method in _KNOWN_METHODS else "OTHER"


class Metrics:
    """The sidecar's metrics on one registry (injected, so tests and workers own theirs)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "sidecar_requests",
            "Requests answered, by route, method and status code.",
            ["route", "method", "code"],
            registry=registry,
        )
        self.rejections = Counter(
            "sidecar_rejections",
            "Requests refused (or, in audit mode, that would have been), by route, reason and mode.",
            ["route", "reason", "mode"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "sidecar_upstream_errors",
            "Allowed requests the upstream did not answer: unreachable (502), timed out (504), or broken mid-stream.",
            ["route", "error"],
            registry=registry,
        )
        self.client_write_timeouts = Counter(
            "sidecar_client_write_timeouts",
            "Client connections reset because the client took none of the response for limits.send_timeout (it "
            "stopped reading), by the route last forwarded on the connection.",
            ["route"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "sidecar_request_duration_seconds",
            "Time from request head to the end of the response, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "sidecar_upstream_duration_seconds",
            "Time from sending the request upstream to the upstream's response head, by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.upstream_connections = Gauge(
            "sidecar_upstream_connections",
            "Upstream connections open (idle or in use), in all workers; each worker's pool holds at most "
            "upstream_pool.max_connections.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.ready = Gauge(
            "sidecar_ready",
            "1 when the policy is loaded and every provider's keys were fetched at least once (every worker).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.admin_refusals = Counter(
            "sidecar_admin_refusals",
            "Admin listener connections closed by its limits, by reason: headers_too_large, header_timeout, "
            "bad_request (answered, then closed), too_many_connections (the oldest reset past the cap).",
            ["reason"],
            registry=registry,
        )
        self.idle_connections_closed = Counter(
            "sidecar_idle_connections_closed",
            "Idle proxy connections (kept alive between requests, or not sending yet) closed to make room for a new "
            "one at --max-connections; new ones refused there with none idle count as rejections "
            "(reason too_many_connections).",
            registry=registry,
        )

        self.config_reloads = Counter(
            "sidecar_config_reloads",
            "Policy reloads (file change or SIGHUP), by result: success, or error (the old policy stays).",
            ["result"],
            registry=registry,
        )
        self.config_info = Gauge(
            "sidecar_config_info",
            "The live policy: 1 for the first 12 hex digits of the policy file's sha256, 0 for replaced ones.",
            ["hash"],
            registry=registry,
            multiprocess_mode="livemax",
        )

        self._key_metrics(registry)
        self._store_metrics(registry)
        self._tls_metrics(registry)
        # The labelled children per label values, looked up once: `labels()` costs several µs per call. Bounded:
        # route names come from the policy, methods from `method_label`, codes are three digits, reasons an enum.
        self._answered: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._children: dict[tuple[Any, ...], Any] = {}

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request: counted by route, method and code; its duration observed by route."""
        key = (route, method_label(method), status)  # never the raw method: a client would mint keys
        children = self._answered.get(key)
        if children is None:
            count = self.requests.labels(route, key[1], str(status))
            children = self._answered[key] = (count, self.request_duration.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def upstream_answered(self, route: str, seconds: float) -> None:
        key = ("upstream", route)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.upstream_duration.labels(route)
        child.observe(seconds)

    def rejected(self, route: str, reason: Reason, mode: Mode) -> None:
        key = ("rejected", route, reason, mode)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.rejections.labels(route, reason.value, mode.value)
        child.inc()

    def cut_off(self, route: str) -> None:
        """A client connection reset after send_timeout in which it took none of its response (rare: uncached)."""
        self.client_write_timeouts.labels(route).inc()

    def admin_refused(self, reason: str) -> None:
        self.admin_refusals.labels(reason).inc()  # rare: no cached child

    # --- the shared rate-limit store (ratelimit/redis_store.py's observer) ----------------------------------------

    def _store_metrics(self, registry: CollectorRegistry) -> None:
        self.ratelimit_store_errors = Counter(
            "sidecar_ratelimit_store_errors",
            "Calls to the rate-limit store (rate_limit_store: Redis) that failed, by error: timeout, unreachable, "
            "auth, error. Each one's request was decided by on_error.",
            ["error"],
            registry=registry,
        )
        for error in STORE_ERRORS:  # exported at 0 from the start: rate() and alerts see the first error
            self.ratelimit_store_errors.labels(error)
        self.ratelimit_store_up = Gauge(
            "sidecar_ratelimit_store_up",
            "0 while the rate-limit store fails (its last call or check failed: requests are decided by on_error; each "
            "worker checks it every 5 s, traffic or not), else 1 (also without a store: limits counted in memory "
            "cannot fail). The lowest of all workers.",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.ratelimit_store_up.set(1)

    def store_failed(self, error: str) -> None:
        self.ratelimit_store_errors.labels(error).inc()
        self.ratelimit_store_up.set(0)

    def store_answered(self) -> None:
        self.ratelimit_store_up.set(1)

    # --- TLS on the proxy listener (edge/tls.py) ------------------------------------------------------------------

    def _tls_metrics(self, registry: CollectorRegistry) -> None:
        self.tls_reloads = Counter(
            "sidecar_tls_reloads",
            "Reloads of the proxy listener's certificate and key (files changed, or SIGHUP), by result: success, or "
            "error (unreadable, not PEM, key not the certificate's: the current pair keeps serving).",
            ["result"],
            registry=registry,
        )
        self.tls_handshake_failures = Counter(
            "sidecar_tls_handshake_failures",
            "TLS handshakes on the proxy listener that failed, by reason: client_certificate (none, or not from "
            "--tls-client-ca), refused_by_client (the client did not accept our certificate), protocol (no common "
            "version or cipher, not TLS), timeout, closed, too_many_handshakes (an unfinished handshake reset: over "
            "256 in the handshake in one worker).",
            ["reason"],
            registry=registry,
        )
        for reason in TLS_HANDSHAKE_FAILURES:  # at 0 from the start, so that rate() and alerts see the first one
            self.tls_handshake_failures.labels(reason)
        self.tls_certificate_expiry = Gauge(
            "sidecar_tls_certificate_expiry_timestamp_seconds",
            "When the listener's certificate (the one serving new handshakes) expires, as Unix time; the earliest of "
            "all workers. Absent without TLS.",
            ["listener"],
            registry=registry,
            multiprocess_mode="livemin",
        )

    # --- keys and introspection (the KeyStore's and Introspector's observer) ------------------------------------

    def _key_metrics(self, registry: CollectorRegistry) -> None:
        self.jwks_refresh = Counter(
            "sidecar_jwks_refresh",
            "Fetches of a provider's signing keys (start-up, schedule, unknown kid), by result: success or error.",
            ["provider", "result"],
            registry=registry,
        )
        # Set by the key scheduler at least every few seconds (not at scrape time: in multiprocess mode a scrape
        # reads the workers' files). Across workers: the oldest keys, the fewest keys, any worker stale.
        self.jwks_age = Gauge(
            "sidecar_jwks_age_seconds",
            "Seconds since the provider's signing keys were last fetched successfully (absent: never).",
            ["provider"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.jwks_keys = Gauge(
            "sidecar_jwks_keys",
            "Usable signing keys the provider publishes, as last fetched.",
            ["provider"],
            registry=registry,
            multiprocess_mode="livemin",
        )
        self.jwks_stale = Gauge(
            "sidecar_jwks_stale",
            "1 while the last key fetch failed and older keys verify (up to the provider's max_stale).",
            ["provider"],
            registry=registry,
            multiprocess_mode="livemax",
        )
        self.introspection_failures = Counter(
            "sidecar_introspection_failures",
            "Token introspection calls that got no answer (each a 503), by provider and error: unreachable, "
            "timeout, http_status, bad_response.",
            ["provider", "error"],
            registry=registry,
        )

    def keys_fetched(self, provider: str, ok: bool) -> None:
        self.jwks_refresh.labels(provider, "success" if ok else "error").inc()

    def keys_observed(self, statuses: Iterable[KeySetStatus]) -> None:
        for status in statuses:
            if status.age is not None:
                self.jwks_age.labels(status.provider).set(status.age)
            self.jwks_keys.labels(status.provider).set(status.keys)
            self.jwks_stale.labels(status.provider).set(1 if status.stale else 0)

    def introspection_failed(self, provider: str, error: str) -> None:
        self.introspection_failures.labels(provider, error).inc()
