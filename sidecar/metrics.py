"""Every metric the sidecar exports, defined here only (prefix `sidecar_`, base units, enum-only labels)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sidecar.decision import Reason
from sidecar.policy.model import Mode

__all__ = ["NO_ROUTE_LABEL", "Metrics", "method_label"]

# Route names match [A-Za-z0-9_.-]+, so this label can never clash with a real route.
NO_ROUTE_LABEL: Final = "(none)"
_KNOWN_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
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
        self.ready = Gauge(
            "sidecar_ready",
            "1 when the policy is loaded and every provider's keys were fetched at least once (every worker).",
            registry=registry,
            multiprocess_mode="livemin",
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

    def rejected(self, route: str, reason: Reason, mode: Mode) -> None:
        self.rejections.labels(route, reason.value, mode.value).inc()
