"""What the gate checks besides the policy: a conflicting head (400), a declared body over the route's `max_body`
(413), a forwarded query over its `max_query_params` (414), and the route's requests in flight past `max_concurrent`
(503 at once: shed, never queued).

Per worker process, no I/O, no task: a counter per route name, taken before forwarding and given back after.
"""

from __future__ import annotations

from typing import Final

from sidecar.edge.decide import Decision
from sidecar.edge.head import Head
from sidecar.policy.model import Route
from sidecar.reasons import Reason
from sidecar.upstream.target import query_params

__all__ = ["RETRY_AFTER_SECONDS", "Admission", "conflict", "limit_headers"]

# Shedding is for bursts: a second is long enough for one in-flight request to end somewhere.
RETRY_AFTER_SECONDS: Final = 1
_CLOSE: Final = (b"connection", b"close")
_EXTRA: Final = {
    Reason.OVERLOADED: ((b"retry-after", str(RETRY_AFTER_SECONDS).encode("ascii")),),
    Reason.POOL_SHARE_FULL: ((b"retry-after", str(RETRY_AFTER_SECONDS).encode("ascii")),),
    # The rest of the body is not read: a closed connection tells the client so, and stops it sending.
    Reason.BODY_TOO_LARGE: (_CLOSE,),
    Reason.BODY_TIMEOUT: (_CLOSE,),
}


def conflict(head: Head) -> Decision | None:
    """The refusal of a head whose framing or credentials are ambiguous; None when it is not."""
    return Decision(reason=Reason.CONFLICTING_HEADERS) if head.conflict else None


def limit_headers(reason: Reason) -> tuple[tuple[bytes, bytes], ...]:
    """Headers a limit's refusal carries besides the problem's: Retry-After, or Connection: close."""
    return _EXTRA.get(reason, ())


class Admission:
    """Requests in flight per route name (a reloaded route keeps its count: requests under the old policy finish)."""

    __slots__ = ("_in_flight",)

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}

    def admit(self, route: Route, head: Head, query: bytes = b"") -> Reason | None:
        """None: admitted, and `release(route)` must follow. Otherwise the reason it is refused. `query` is the
        client's: counted before the upstream's parameters are protected from it (one pass of C, whatever its size)."""
        if route.max_body is not None and head.content_length is not None and head.content_length > route.max_body:
            return Reason.BODY_TOO_LARGE
        if route.forward_query and query_params(query) > route.max_query_params:
            return Reason.TOO_MANY_QUERY_PARAMS
        count = self._in_flight.get(route.name, 0)
        if route.max_concurrent is not None and count >= route.max_concurrent:
            return Reason.OVERLOADED
        self._in_flight[route.name] = count + 1
        return None

    def release(self, route: Route) -> None:
        count = self._in_flight[route.name] - 1
        if count:
            self._in_flight[route.name] = count
        else:
            del self._in_flight[route.name]

    def in_flight(self, route: str) -> int:
        return self._in_flight.get(route, 0)
