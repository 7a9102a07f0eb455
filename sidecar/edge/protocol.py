"""The listeners' HTTP/1.1 connection: uvicorn's httptools protocol with a deadline for each request head,
bounds on its size and header count, and problem+json refusals (counted and logged) for heads the gate never sees;
and a deadline for a client to make room for the response (send_timeout). The proxy and admin listeners share it,
each with its own Guard (the admin's: sidecar/ops/admin_guard.py).

uvicorn times out only idle keep-alive connections, and httptools bounds neither the size nor the number of
headers: without this, a client sending a head slowly (slowloris), or a head without end, holds a connection and
memory for as long as it likes. Worse, httptools joins the pieces of a header split across reads with `bytes +=`
(and uvicorn the request target with `url +=`): every read copies the whole value so far, so a header without end
costs time quadratic in its length and memory without bound, on the event loop every listener shares. Counting each
read toward max_header_bytes as it arrives bounds both. The checks ride on parser callbacks uvicorn already
receives: no task, no extra scan. Likewise uvicorn waits for ever for a client that stops reading a response, and
with it the upstream connection that response streams from: a timer runs only while the transport is paused for
want of room (a reset ends it). A refusal closes lingering (sidecar/edge/linger.py), so that a client still sending
reads it; a chunked body whose framing breaks mid-request is refused by the gate, told through `body_checked`.

uvicorn has no public protocol API: what this builds on (the copied `data_received`, the private methods it
calls, the overridden callbacks) is pinned by tests/test_dependency_internals.py, and uvicorn bounded to the minor
release it was recorded from (pyproject.toml).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import struct
import time
from typing import Any, ClassVar, Final

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from sidecar.edge.asgi import Message, Receive, Scope
from sidecar.edge.conncap import ConnectionCap
from sidecar.edge.exchange import record_refused_head
from sidecar.edge.linger import Closing
from sidecar.edge.problem import problem_body, problem_headers
from sidecar.edge.runtime import Runtime
from sidecar.observe.log import logger
from sidecar.observe.metrics import NO_ROUTE_LABEL
from sidecar.policy.limits import ServerLimits
from sidecar.reasons import Reason, Rejection, outcome

__all__ = ["BAD_BODY", "SENDING", "Guard", "GuardedProtocol", "body_checked", "protocol_for"]

_CLOSE: Final = (b"connection", b"close")
PROXY_MAX_PIPELINED: Final = 16  # browsers and HTTP clients do not pipeline; a few proxies send a handful
# The scope extension (one dict per connection) in which the gate names what the connection is writing: the `route`
# and `request_id` a client cut off by send_timeout is counted and logged under.
SENDING: Final = "sidecar.sending"
# The scope extension set when the request's body turned out malformed (an invalid chunk size): see body_checked.
BAD_BODY: Final = "sidecar.bad_body"
_SERIALS: Final = itertools.count()
_RESET: Final = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: closing sends a reset


class Guard:
    """What a connection needs from the running sidecar: the current limits, and a refusal counted and logged
    like the gate's (route label `(none)`: no route is known before the head is read)."""

    max_connections: int | None = None  # per worker; past it the oldest connection is reset. None: no cap
    # Requests parsed and queued behind the one being answered (pipelining); past it the connection takes no more
    # and closes after answering those (RFC 9112 9.3.2: the client resends the rest). Each queued request holds its
    # scope and headers: unbounded, a client that pipelines without reading grows the process without end.
    max_pipelined: int | None = PROXY_MAX_PIPELINED

    def __init__(self, runtime: Runtime, cap: ConnectionCap | None = None) -> None:
        self._runtime = runtime
        self.cap = cap  # the proxy listener's: past it the connection idle longest closes, else a new one is refused

    @property
    def limits(self) -> ServerLimits:
        return self._runtime.current.policy.limits

    def refusal(self, reason: Reason, client: str | None, method: str | None, started: float) -> bytes:
        """The whole response, bytes ready for the transport; the connection is closed after it."""
        rid = os.urandom(12).hex()
        response = self.response(reason, rid)
        record_refused_head(self._runtime.metrics, method, client, reason, rid, started)
        return response

    def response(self, reason: Reason, rid: str | None = None) -> bytes:
        """The problem+json refusal with `Connection: close`, as bytes."""
        rid = rid or os.urandom(12).hex()
        body = problem_body(reason, rid, None)
        status = outcome(reason).status
        headers = [*problem_headers(reason, self._runtime.current.policy.realm, rid, body), _CLOSE]
        lines = [f"HTTP/1.1 {status} {outcome(reason).title}".encode("ascii")]
        lines += [name + b": " + value for name, value in headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    def cut_off(self, sending: dict[object, object], client: str | None, send_timeout: float) -> None:
        """A client that took none of its response for `send_timeout`: counted and logged (never a body)."""
        route = sending.get("route")
        self._runtime.metrics.cut_off(route if isinstance(route, str) else NO_ROUTE_LABEL)
        fields = {"route": route, "request_id": sending.get("request_id"), "client_ip": client}
        logger.warning("client stopped reading", extra={"fields": {**fields, "send_timeout": send_timeout}})

    def evicted(self) -> None:
        """A connection was reset to stay within `max_connections` (counted by guards that have a cap)."""


class _HeadTooLarge(Exception):
    """Raised from a parser callback: httptools stops and `feed_data` raises (a HttpParserCallbackError)."""


class _FragmentInTarget(Exception):
    """Raised from a parser callback: the request target holds a raw `#` (refused 400 invalid_path)."""


class _Pipelined(Exception):
    """Raised from a parser callback: too many requests queued unanswered. Parsing stops; `_refuse` lets the
    queued ones be answered and the connection close after them (the answers are the client's to read)."""


class GuardedProtocol(HttpToolsProtocol):
    """One connection. A head's deadline runs from its first byte (from the connection's start for the first
    request: a connection that never sends one is closed then, silently); idle time between requests stays
    uvicorn's keep-alive timeout.

    Cheap on the hot path (measured: the per-header parser callback is not overridden): per request a few
    assignments and one clock read. One timer per connection is re-armed lazily when it fires early."""

    guard: ClassVar[Guard]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = self.guard.limits  # read once per connection: a reload applies to the next ones
        self._timer: asyncio.TimerHandle | None = None  # fires at (or before) the current head's deadline
        self._draining: asyncio.TimerHandle | None = None  # a refused request's unread body (see on_response_complete)
        self._drained: object = None  # the request (uvicorn's cycle) whose unread body is being drained
        self._in_head = True  # between a head's start (or the connection's) and its end
        self._head_started = False  # a byte of the current head has arrived
        self._began = self.loop.time()  # the current head's first byte (or the connection's start)
        self._head_bytes = 0  # bytes of the current head seen in earlier chunks, delimiters included
        self._chunk = 0  # the size of the chunk being parsed
        self._begins = 0  # requests begun in the chunk being parsed
        self._too_large = False
        self._fragment = False  # the head's target held a raw `#` (_FragmentInTarget)
        self._stalled: asyncio.TimerHandle | None = None  # runs while writing is paused (see pause_writing)
        self._unsent = 0  # bytes waiting for the client when that timer was armed
        self._sending: dict[object, object] = {}  # SENDING: what the gate says this connection writes
        self._serial = next(_SERIALS)  # the order connections were made in (for the connection cap)
        self._refused = False  # input was refused unparsed: the client may still be sending (edge/linger.py)

    # --- the connection ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn and its request cycles close through this one: see sidecar/edge/linger.py.
        self.transport = self._closing = Closing(transport, self.loop, self._may_send, self.flow.resume_reading)
        cap = self.guard.max_connections
        if cap is not None and len(self.connections) > cap:
            self._evict_oldest()
        if self.guard.cap is not None and not self._within_cap(self.guard.cap):
            return
        self._timer = self.loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def _within_cap(self, cap: ConnectionCap) -> bool:
        """Past the cap, closes the connection idle longest (sidecar/edge/conncap.py); with none idle, refuses this one
        at once: a 503 written before any request (clients read it as the answer to theirs), then closed."""
        if len(self.connections) > cap.limit:
            idle = cap.oldest_idle(_is_idle)
            if not isinstance(idle, GuardedProtocol):
                self.connections.discard(self)  # counted out now: its connection_lost comes in a later loop turn
                self.transport.write(self.guard.response(Reason.TOO_MANY_CONNECTIONS))
                # Closed at once, never lingering (edge/linger.py): at accept the request has rarely arrived yet, and
                # a refused connection held 2 s outside the count would let a flood of them grow the worker again.
                self._closing.end()
                cap.refused()
                return False
            self.connections.discard(idle)
            idle._closing.end()  # nothing is buffered or unread on an idle connection: a plain close (FIN)
            cap.closed_idle()
        cap.became_idle(self)  # connected, not sending yet: nginx too counts this one as reusable
        return True

    def _evict_oldest(self) -> None:
        """Resets the listener's oldest connection: whoever holds connections open cannot lock newer ones out (a
        probe's lives for milliseconds), and memory stays bounded by the cap. A reset, not a close: a close would
        wait for a client that does not read to take what was written to it."""
        oldest = min((c for c in self.connections if isinstance(c, GuardedProtocol)), key=lambda c: c._serial)
        self.connections.discard(oldest)  # counted out now: its connection_lost comes in a later loop turn
        sock = oldest.transport.get_extra_info("socket")
        if sock is not None:  # a reset (RST) the client sees as one, not an ordinary end of the connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        oldest.transport.abort()
        self.guard.evicted()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self._closing.forget()
        self.transport = self._closing.raw  # gone: uvicorn's close now is the transport's own, never a lingering one
        if self.guard.cap is not None:
            self.guard.cap.became_busy(self)  # gone: no longer a candidate
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn 0.54's (recorded in tests/test_dependency_internals.py), with the refusals ours. While a head is
        incomplete, every chunk of it counts whole toward max_header_bytes, so a head without end is cut off as it
        arrives (not only once complete). Once answered and lingering, what arrives is dropped unread."""
        if self._closing.lingering:
            self._closing.dropped(len(data))
            return
        self._unset_keepalive_if_required()
        continuing = self._head_started  # a head under way: the chunk is that head's until it ends
        at_start = not continuing and (self.cycle is None or not self.cycle.more_body)  # no request under way
        self._chunk, self._begins = len(data), 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._refuse(self._parse_refusal())
            return
        if self._in_head and self._head_started:
            # Whole chunks only: when a chunk also holds the end of an earlier request (pipelining), the head's
            # share of it is unknown, and the next chunks bound the head.
            if (continuing and self._begins == 0) or (at_start and self._begins == 1):
                self._head_bytes += len(data)
            if self._head_bytes > self._limits.max_header_bytes:
                self._refuse(Reason.HEADERS_TOO_LARGE)

    def shutdown(self) -> None:
        self._cancel_timers()
        super().shutdown()

    def pause_writing(self) -> None:
        """The transport holds more than it can send: the client is not taking the response as fast as it comes.
        Fine (a slow network) as long as it takes some; a client that takes nothing for send_timeout has stopped
        reading."""
        super().pause_writing()
        if self._stalled is None:
            self._arm_stall_timer()

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_stall_timer()

    # --- parser callbacks ----------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        queued = self.guard.max_pipelined
        if queued is not None and len(self.pipeline) >= queued:
            raise _Pipelined
        super().on_message_begin()
        if self.guard.cap is not None:
            self.guard.cap.became_busy(self)
        self.scope.setdefault("extensions", {})[SENDING] = self._sending
        self._in_head = self._head_started = True
        self._begins += 1
        self._too_large = False
        self._head_bytes = 0
        self._began = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_later(self._limits.header_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head = self._head_started = False
        limits = self._limits
        # The exact size is summed only when the chunks could hold more than the limit: big heads are rare.
        maybe_large = self._head_bytes + self._chunk > limits.max_header_bytes
        if len(self.headers) > limits.max_headers or (maybe_large and self._head_size() > limits.max_header_bytes):
            self._too_large = True
            raise _HeadTooLarge
        if b"#" in self.url:
            # RFC 9112 has no fragment in a request target; httptools would cut it off unseen, and a proxy or
            # application before or behind us may read it as part of the path (`/public/x#/../../admin`).
            self._fragment = True
            raise _FragmentInTarget
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        """A response sent before its request's body ended (a refusal does not read the body): uvicorn reads the
        rest and drops it, for as long as the client sends. It gets `body_timeout` in all; then the connection
        closes (the client has its answer)."""
        super().on_response_complete()
        if self.guard.cap is not None and _is_idle(self):
            self.guard.cap.became_idle(self)
        if self.cycle is not None and self.cycle.more_body and not self.transport.is_closing():
            self._stop_draining()
            self._drained = self.cycle
            self._draining = self.loop.call_later(self._limits.body_timeout, self._drain_timed_out)

    # --- limits --------------------------------------------------------------------------------------------------

    def _head_size(self) -> int:
        """The request target plus every header name and value."""
        return len(self.url) + sum(len(name) + len(value) for name, value in self.headers)

    def _parse_refusal(self) -> Reason:
        """Why the parser stopped: one of our callbacks' refusals, or the head is malformed."""
        if self._fragment:
            return Reason.INVALID_PATH
        return Reason.HEADERS_TOO_LARGE if self._too_large else Reason.BAD_REQUEST

    def _head_timed_out(self) -> None:
        self._timer = None
        if not self._in_head or self.transport.is_closing():
            return  # idle between requests (uvicorn's keep-alive timeout): the next head re-arms the timer
        left = self._began + self._limits.header_timeout - self.loop.time()
        if left > 0:  # armed for an earlier head
            self._timer = self.loop.call_later(left, self._head_timed_out)
        elif self._head_started:
            self._refuse(Reason.HEADER_TIMEOUT)
        else:
            self.transport.close()  # connected and silent: not a request, nothing to answer or count

    def _cancel_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._stop_draining()
        self._stop_stall_timer()

    def _stop_stall_timer(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _arm_stall_timer(self) -> None:
        self._unsent = self.transport.get_write_buffer_size()
        self._stalled = self.loop.call_later(self._limits.send_timeout, self._send_timed_out)

    def _send_timed_out(self) -> None:
        """Still paused: if the client took some bytes meanwhile, it gets another send_timeout. Otherwise reset, not
        closed: a close waits for the client to take what is buffered, which it never does. uvicorn then tells the
        app the client is gone, and its exchange ends (the upstream connection dropped, not reused)."""
        self._stalled = None
        if self.transport.get_write_buffer_size() < self._unsent:  # a slow client, not a stopped one
            self._arm_stall_timer()
            return
        client = self.client[0] if self.client else None
        self.guard.cut_off(self._sending, client, self._limits.send_timeout)
        self.transport.abort()

    def _stop_draining(self) -> None:
        if self._draining is not None:
            self._draining.cancel()
            self._draining = None

    def _drain_timed_out(self) -> None:
        """Closes unless the body has ended since (then the connection may have moved on to other requests)."""
        self._draining = None
        cycle = self.cycle
        if cycle is self._drained and cycle is not None and cycle.more_body and not self.transport.is_closing():
            self._closing.end()  # it has had body_timeout to stop sending: no lingering on top

    def _may_send(self) -> bool:
        """Whether the client may still be sending when the connection closes: input refused unparsed, a body not
        read to its end, requests queued behind this one. Then the close lingers (sidecar/edge/linger.py)."""
        cycle = self.cycle
        return self._refused or (cycle is not None and cycle.more_body) or bool(self.pipeline)

    def _refuse(self, reason: Reason) -> None:
        """Answer and close, lingering; while an earlier (pipelined) request's response is still being written,
        let it end and close then, with no answer for this head (writing one would cut into that response). A body
        found malformed while its request is being answered is the gate's to refuse (see `body_checked`); after its
        answer, the connection just closes."""
        self._cancel_timers()
        self._in_head = False
        self._refused = True
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False
            if cycle.more_body:  # the error is in this request's body (a later head would follow its end)
                cycle.scope["extensions"][BAD_BODY] = {}  # its presence tells (extensions hold dicts)
                cycle.message_event.set()  # wakes a forward waiting for the body
            return
        if cycle is not None and cycle.more_body:  # the body of a request already answered, read to be dropped
            self._closing.linger()  # no second answer: it would pass for the answer to the client's next request
            return
        method = self.parser.get_method().decode("ascii", "replace") if getattr(self, "url", b"") else None
        client = self.client[0] if self.client else None
        started = time.perf_counter() - (self.loop.time() - self._began)
        self.transport.write(self.guard.refusal(reason, client, method, started))
        self._closing.linger()


def body_checked(receive: Receive, scope: Scope) -> Receive:
    """`receive` for a chunked request body, raising Rejection(bad_request) once the protocol found the body's
    framing invalid: the forward stops with the upstream request unfinished (its connection closed, never a last
    chunk sent), and the gate answers 400 under the route. Without it the forward waited for more body until
    body_timeout (408), the parser being stopped."""
    extensions = scope.get("extensions") or {}  # none: not served by this protocol, nothing sets BAD_BODY

    async def checked() -> Message:
        message = await receive()
        if BAD_BODY in extensions:
            raise Rejection(Reason.BAD_REQUEST)
        return message

    return checked


def _is_idle(connection: object) -> bool:
    """Between requests (or connected and silent): no head under way, none queued, the last response and its
    request's body ended. Such a connection can be closed without cutting anything off."""
    if not isinstance(connection, GuardedProtocol) or connection.transport.is_closing():
        return False
    cycle = connection.cycle
    done = cycle is None or (cycle.response_complete and not cycle.more_body)
    return done and not connection._head_started and not connection.pipeline


def protocol_for(guard: Guard) -> type[GuardedProtocol]:
    """The protocol class uvicorn instantiates per connection (its `http` setting), bound to `guard`."""

    class Bound(GuardedProtocol):
        pass

    Bound.guard = guard
    return Bound
