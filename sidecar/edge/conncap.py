"""The proxy listener's per-worker connection cap: which connections are idle, which to close for a new one, and the
counting and the (rate-limited) log line when the cap is reached.

An idle connection costs ~10 KB of the worker's memory (measured: 18,800 kept-alive connections took a worker from
67 MB to 246 MB, near the chart's 256 MiB limit), and a client keeps one for 75 s with one tiny request. At the cap,
as nginx does when it runs out of `worker_connections`, the connection idle the longest (kept alive between
requests, or connected and not yet sending) is closed so the new one can be served; when none is idle, the new one
is refused at once (503 problem+json `too_many_connections`, then closed). Connections sending a head are bounded
by header_timeout, so a refusal lasts only while the cap is held by work in progress.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from sidecar.observe.log import logger
from sidecar.observe.metrics import NO_ROUTE_LABEL, Metrics
from sidecar.policy.model import Mode
from sidecar.reasons import Reason, outcome

__all__ = ["CAP_LOG_INTERVAL", "ConnectionCap"]

CAP_LOG_INTERVAL: Final = 10.0  # seconds: at most one "connection cap reached" line per worker per interval


class ConnectionCap:
    """One listener's cap (per worker). `idle` holds the idle connections, the one idle longest first."""

    def __init__(
        self,
        limit: int,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.idle: OrderedDict[object, None] = OrderedDict()
        self._metrics = metrics
        self._clock = clock
        self._logged_at: float | None = None
        self._refused = 0  # since the last log line
        self._closed_idle = 0

    def became_idle(self, connection: object) -> None:
        self.idle.pop(connection, None)
        self.idle[connection] = None  # the newest idle last

    def became_busy(self, connection: object) -> None:
        self.idle.pop(connection, None)

    def oldest_idle(self, still_idle: Callable[[object], bool]) -> object | None:
        """Takes the connection idle the longest out of `idle` (skipping any `still_idle` denies); None: none."""
        while self.idle:
            connection, _ = self.idle.popitem(last=False)
            if still_idle(connection):
                return connection
        return None

    def closed_idle(self) -> None:
        self._closed_idle += 1
        self._metrics.idle_connections_closed.inc()
        self._log()

    def refused(self) -> None:
        self._refused += 1
        # Counted like the heads refused before the gate (route `(none)`), without an access line each: a flood of
        # connections must not become a flood of log lines (see _log).
        self._metrics.rejected(NO_ROUTE_LABEL, Reason.TOO_MANY_CONNECTIONS, Mode.ENFORCE)
        self._metrics.answered(NO_ROUTE_LABEL, "", outcome(Reason.TOO_MANY_CONNECTIONS).status, 0.0)
        self._log()

    def _log(self) -> None:
        """One warning per interval, with what happened since the last: a flood of connections is no flood of lines."""
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < CAP_LOG_INTERVAL:
            return
        self._logged_at = now
        fields = {"max_connections": self.limit, "closed_idle": self._closed_idle, "refused": self._refused}
        logger.warning("connection cap reached", extra={"fields": fields})
        self._refused = self._closed_idle = 0
