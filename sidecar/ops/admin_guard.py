"""The admin listener's connection limits: small heads, short timeouts and a cap on connections, so that nothing sent
to the admin port (no token needed) can slow the proxy sharing its event loop or grow the process.

Prometheus and the kubelet send heads of a few hundred bytes at once, so the admin limits are far below the proxy's:
8 KiB and 32 headers per head, 5 s to send it, 5 s idle between requests, 5 s for an unread body, and 32
connections per worker. Where the proxy's limits (policy `limits:`) are stricter, those apply. Past the cap the
oldest admin connection is reset, so that connections held open by someone else cannot lock out the probes.
"""

from __future__ import annotations

from typing import Final

from sidecar.edge.protocol import Guard
from sidecar.observe.log import logger
from sidecar.policy.limits import KIB, ServerLimits
from sidecar.reasons import Reason

__all__ = [
    "ADMIN_IDLE_TIMEOUT",
    "ADMIN_LIMITS",
    "ADMIN_MAX_CONNECTIONS",
    "ADMIN_MAX_PIPELINED",
    "AdminGuard",
]

ADMIN_LIMITS: Final = ServerLimits(max_header_bytes=8 * KIB, max_headers=32, header_timeout=5.0, body_timeout=5.0)
ADMIN_IDLE_TIMEOUT: Final = 5.0  # keep-alive between requests (uvicorn's default; the proxy's is 75 s)
ADMIN_MAX_CONNECTIONS: Final = 32  # per worker: a few probes and scrapers at a time
ADMIN_MAX_PIPELINED: Final = 8  # requests queued behind the one being answered; past it: answered, then closed
TOO_MANY_CONNECTIONS: Final = "too_many_connections"  # the reason label of an admin connection closed by the cap


class AdminGuard(Guard):
    """Refusals on the admin listener are counted in `sidecar_admin_refusals_total{reason}` and logged as
    `admin refusal`, never as proxy requests (they would count in the proxy's request and rejection series)."""

    max_connections = ADMIN_MAX_CONNECTIONS
    max_pipelined = ADMIN_MAX_PIPELINED

    @property
    def limits(self) -> ServerLimits:
        proxy = super().limits
        return ServerLimits(
            max_header_bytes=min(proxy.max_header_bytes, ADMIN_LIMITS.max_header_bytes),
            max_headers=min(proxy.max_headers, ADMIN_LIMITS.max_headers),
            header_timeout=min(proxy.header_timeout, ADMIN_LIMITS.header_timeout),
            body_timeout=min(proxy.body_timeout, ADMIN_LIMITS.body_timeout),
        )

    def refusal(self, reason: Reason, client: str | None, method: str | None, started: float) -> bytes:
        self._runtime.metrics.admin_refused(reason.value)
        logger.warning("admin refusal", extra={"fields": {"reason": reason.value, "client_ip": client}})
        return self.response(reason)

    def evicted(self) -> None:
        self._runtime.metrics.admin_refused(TOO_MANY_CONNECTIONS)
