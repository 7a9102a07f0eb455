"""HTTPS on the proxy listener: a Mozilla-intermediate server context, replaced whole when its files change, and
each connection's first bytes looked at before any TLS (plain HTTP gets nginx's answer: 400, then close).

Why TLS starts here rather than in `loop.create_server(ssl=...)`: the loop's own TLS hides a failed handshake (no
count, no log line) and answers plain HTTP with a silent close. Here the listener accepts plain TCP; the first chunk
decides. TLS (a handshake record) is handed to asyncio's TLS protocol with the context current at that moment, and
the connection's HTTP protocol (edge/protocol.py) runs on top once the handshake is done. A reload therefore never
touches a live connection: open ones keep the context they started with, new handshakes take the new one.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import socket
import ssl
import time
from asyncio import sslproto
from dataclasses import dataclass
from typing import Any, ClassVar, Final, cast

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from uvicorn.config import Config
from uvicorn.server import ServerState

from sidecar.edge.protocol import _RESET, GuardedProtocol
from sidecar.observe.log import logger
from sidecar.observe.metrics import Metrics
from sidecar.options import ListenerTlsFiles
from sidecar.reasons import Reason

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "MAX_HANDSHAKES",
    "MOZILLA_INTERMEDIATE_CIPHERS",
    "SHUTDOWN_TIMEOUT",
    "TOO_MANY_HANDSHAKES",
    "ListenerTls",
    "TlsFilesError",
    "server_context",
    "tls_protocol_for",
]

# Mozilla's "intermediate" TLS 1.2 suites (ssl-config.mozilla.org, guidelines 5.7) without the DHE ones, which need
# DH parameters of our own and add nothing a current client lacks; TLS 1.3 keeps OpenSSL's suites (all modern).
MOZILLA_INTERMEDIATE_CIPHERS: Final = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
# Per worker: connections in the handshake at once. Each holds OpenSSL's state and a read buffer (~60 KiB); past the
# cap the oldest unfinished handshake is reset (as the admin listener's cap does), so that handshakes left hanging
# by someone cannot grow the worker to its memory limit, nor lock newer callers out.
MAX_HANDSHAKES: Final = 256
# A closed connection waits this long for the client's close_notify (asyncio's default, 30 s, held every closed
# socket that long, and a SIGTERM drain with it for idle keep-alive clients, which never answer it).
SHUTDOWN_TIMEOUT: Final = 2.0
HANDSHAKE_TIMEOUT: Final = 5.0  # seconds from the first byte to a finished handshake (or the policy's header_timeout)
TOO_MANY_HANDSHAKES: Final = "too_many_handshakes"  # the reason label of a handshake reset by the cap
# OpenSSL reasons when the caller's certificate is missing or not from --tls-client-ca.
_CLIENT_CERTIFICATE: Final = frozenset(
    {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "CERTIFICATE_VERIFY_FAILED", "TLSV13_ALERT_CERTIFICATE_REQUIRED"}
)


class TlsFilesError(Exception):
    """The certificate, key or client CA cannot be used; the message names the file and OpenSSL's reason only
    (never a byte of the key)."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    context: ssl.SSLContext
    not_after: float  # the leaf certificate's expiry (Unix seconds)
    fingerprint: str  # its SHA-256, as `openssl x509 -fingerprint -sha256` shows it (without colons)


def server_context(files: ListenerTlsFiles) -> ssl.SSLContext:
    """A fresh server context from the files as they are now, or TlsFilesError."""
    return _load(files).context


def _load(files: ListenerTlsFiles) -> _Loaded:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MOZILLA_INTERMEDIATE_CIPHERS)
    # No compression (CRIME), no renegotiation, no session tickets (Mozilla: their keys would outlive a rotation).
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    # OP_NO_TICKET alone only makes OpenSSL 3's TLS 1.3 tickets stateful (still resumable, without a certificate):
    # no TLS 1.3 tickets at all, so every TLS 1.3 connection is a full handshake. (TLS 1.2 session-ID resumption
    # from OpenSSL's per-context cache has no switch in Python's ssl: see docs/tls.md.)
    context.num_tickets = 0
    context.set_alpn_protocols(["http/1.1"])  # HTTP/1.1 only; a client that offers only h2 gets no ALPN answer
    try:
        context.load_cert_chain(files.cert, files.key, password=_encrypted_key)
    except OSError as exc:  # ssl.SSLError included
        raise TlsFilesError(f"--tls-cert {files.cert} / --tls-key {files.key}: {_why(exc)}") from None
    except TlsFilesError as exc:  # from _encrypted_key
        raise TlsFilesError(f"--tls-key {files.key}: {exc}") from None
    if files.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        try:
            context.load_verify_locations(cafile=files.client_ca)
        except OSError as exc:
            raise TlsFilesError(f"--tls-client-ca {files.client_ca}: {_why(exc)}") from None
    not_after, fingerprint = _leaf(files.cert)
    return _Loaded(context, not_after, fingerprint)


def _encrypted_key() -> str:
    """Called by OpenSSL only for an encrypted key: refused rather than prompting on a terminal nobody watches."""
    raise TlsFilesError("the key is encrypted: give the sidecar an unencrypted key (in a Secret, mode 0400)")


def _why(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "KEY_VALUES_MISMATCH":
            return "the key is not the certificate's (KEY_VALUES_MISMATCH)"
        return f"not usable PEM ({exc.reason or type(exc).__name__})"
    return exc.strerror or type(exc).__name__


def _leaf(cert_file: str) -> tuple[float, str]:
    """The first certificate of the chain: its expiry and fingerprint, for the log and the expiry metric."""
    try:
        with open(cert_file, "rb") as file:
            leaf = x509.load_pem_x509_certificate(file.read())
    except (OSError, ValueError) as exc:  # changed again since OpenSSL read it: the next poll sees it
        raise TlsFilesError(f"--tls-cert {cert_file}: changed while loading ({type(exc).__name__})") from None
    der = leaf.public_bytes(Encoding.DER)
    return leaf.not_valid_after_utc.timestamp(), hashlib.sha256(der).hexdigest().upper()


class ListenerTls:
    """The proxy listener's current server context. `reload()` builds a new one from the files; a pair that does
    not load keeps the current one, logged and counted (sidecar_tls_reloads_total{result="error"})."""

    def __init__(self, files: ListenerTlsFiles, metrics: Metrics) -> None:
        self.files = files
        self._metrics = metrics
        self._loaded = _load(files)  # TlsFilesError at start: the sidecar does not start without its certificate
        for result in ("success", "error"):  # at 0 from the start: an alert on errors sees the first one
            metrics.tls_reloads.labels(result)
        self._announce("tls certificate loaded")

    @property
    def context(self) -> ssl.SSLContext:
        return self._loaded.context

    def reload(self, trigger: str) -> bool:
        try:
            loaded = _load(self.files)
        except TlsFilesError as exc:
            self._metrics.tls_reloads.labels("error").inc()
            fields = {"trigger": trigger, "error": str(exc), "fingerprint": self._loaded.fingerprint}
            logger.error("tls reload failed; keeping the current certificate", extra={"fields": fields})
            return False
        self._loaded = loaded
        self._metrics.tls_reloads.labels("success").inc()
        self._announce("tls certificate reloaded", trigger=trigger)
        return True

    def _announce(self, message: str, **extra: str) -> None:
        loaded = self._loaded
        self._metrics.tls_certificate_expiry.labels("proxy").set(loaded.not_after)
        expires = datetime.datetime.fromtimestamp(loaded.not_after, datetime.UTC).isoformat()
        fields = {"cert": self.files.cert, "fingerprint": loaded.fingerprint, "not_after": expires, **extra}
        logger.info(message, extra={"fields": {**fields, "client_ca": self.files.client_ca}})
        if loaded.not_after <= time.time():  # served anyway (there is no other): verifying clients will refuse it
            logger.error("tls certificate has expired", extra={"fields": fields})

    def handshake_failed(self, exc: BaseException, client: str | None) -> None:
        """One line and one count per failed handshake, never a traceback: scanners and old clients are routine."""
        kind = _failure_kind(exc)
        self._metrics.tls_handshake_failures.labels(kind).inc()
        cause = getattr(exc, "reason", None) or type(exc).__name__
        logger.info("tls handshake failed", extra={"fields": {"client_ip": client, "kind": kind, "cause": cause}})

    def handshake_evicted(self, client: str | None) -> None:
        """An unfinished handshake reset by the per-worker cap (MAX_HANDSHAKES)."""
        self._metrics.tls_handshake_failures.labels(TOO_MANY_HANDSHAKES).inc()
        fields = {"client_ip": client, "kind": TOO_MANY_HANDSHAKES, "cause": f"over {MAX_HANDSHAKES} in the handshake"}
        logger.info("tls handshake failed", extra={"fields": fields})


def _failure_kind(exc: BaseException) -> str:
    """The `reason` label of sidecar_tls_handshake_failures_total."""
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _CLIENT_CERTIFICATE:
            return "client_certificate"
        if reason.startswith(("TLSV1_ALERT_", "SSLV3_ALERT_")):  # the client refused us: our certificate, say
            return "refused_by_client"
        return "protocol"
    if isinstance(exc, ConnectionAbortedError):  # asyncio's handshake timeout
        return "timeout"
    return "closed"


class _TlsLayer(sslproto.SSLProtocol):
    """asyncio's TLS protocol with a 32 KiB read buffer instead of 256 KiB (allocated per connection, at once). Safe:
    a TLS record is at most 16 KiB plus 2 KiB of overhead, and asyncio reads and decrypts in a loop until nothing is
    left, so a smaller buffer only means more reads of a large body, never a lost or cut record."""

    max_size = 32 * 1024
    evicted = False  # reset by the handshake cap (counted there, not again as `closed`)

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        # asyncio aborts a failed handshake without sending what OpenSSL queued: the alert that tells the client
        # why (certificate required, protocol version). Sent first, so a client reports the reason, not a reset.
        transport = cast(asyncio.Transport | None, self._transport)
        if handshake_exc is not None and transport is not None:
            alert = self._outgoing.read()  # type: ignore[attr-defined]  # typeshed lacks it; 3.11-3.13 have it
            if alert:
                transport.write(alert)
        super()._on_handshake_complete(handshake_exc)

    def evict(self, transport: asyncio.Transport) -> None:
        """Reset now, and OpenSSL's state and the buffer freed now: the transport's end (and with it this object's)
        comes in a later loop turn, and a burst of new handshakes read in one turn would otherwise hold every
        evicted one's memory until then."""
        self.evicted = True
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a reset (RST) the client sees as one, not an ordinary end of the connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        transport.abort()  # no more reads; connection_lost (which does not touch OpenSSL's state) follows
        self._sslobj = None
        self._ssl_buffer = bytearray()
        self._ssl_buffer_view = memoryview(self._ssl_buffer)


class _TlsFront(asyncio.Protocol):
    """A new connection until its first bytes: TLS goes on to the handshake, plain HTTP gets a 400."""

    inner: ClassVar[type[GuardedProtocol]]
    tls: ClassVar[ListenerTls]
    handshaking: ClassVar[dict[_TlsLayer, asyncio.Transport]]  # this worker's unfinished handshakes, oldest first

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._app = self.inner(config, server_state, app_state, _loop)  # uvicorn's arguments, passed on
        self._loop = _loop or asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        # A connection that never sends a byte is closed silently, as edge/protocol.py closes a silent one.
        self._timer = self._loop.call_later(self.inner.guard.limits.header_timeout, self._close)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of a plain request: read and dropped until the client closes or the timer fires
        self._cancel_timer()
        if data[:1].isalpha():  # a request line (a method); a ClientHello starts with 0x16, never a letter
            self._refuse_plain(data)
        else:  # a handshake record, or bytes OpenSSL will refuse and the count will show
            self._start_tls(data)

    def eof_received(self) -> bool:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.close()

    def _client(self) -> str | None:
        assert self._transport is not None
        peer = self._transport.get_extra_info("peername")
        return str(peer[0]) if peer else None

    def _refuse_plain(self, data: bytes) -> None:
        """nginx's answer to plain HTTP on an HTTPS port: a 400 that says so, then the connection closes. Our
        side is shut first and the rest of the request read and dropped (a close with unread bytes would reset
        the connection and could destroy the answer before the client reads it)."""
        assert self._transport is not None
        self._refused = True
        method = data.split(b" ", 1)[0][:16].decode("ascii", "replace")
        self._transport.write(self.inner.guard.refusal(Reason.PLAIN_HTTP, self._client(), method, time.perf_counter()))
        if self._transport.can_write_eof():
            self._transport.write_eof()
        self._timer = self._loop.call_later(self.inner.guard.limits.header_timeout, self._close)

    def _start_tls(self, data: bytes) -> None:
        assert self._transport is not None
        transport, client = self._transport, self._client()
        if len(self.handshaking) >= MAX_HANDSHAKES:
            _evict_oldest(self.handshaking, self.tls)
        waiter = self._loop.create_future()
        layer = _TlsLayer(
            self._loop,
            self._app,
            self.tls.context,
            waiter,
            server_side=True,
            # typeshed says int; asyncio takes seconds
            ssl_handshake_timeout=min(HANDSHAKE_TIMEOUT, self.inner.guard.limits.header_timeout),  # type: ignore[arg-type]
            ssl_shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        self.handshaking[layer] = transport
        handshaking, tls = self.handshaking, self.tls
        waiter.add_done_callback(lambda done: _handshake_done(done, tls, client, layer, handshaking))
        transport.set_protocol(layer)
        layer.connection_made(transport)
        view = memoryview(data)
        while view and not transport.is_closing():  # what already arrived goes to the TLS layer as if read now
            buffer = layer.get_buffer(len(view))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            layer.buffer_updated(size)
            view = view[size:]


def _evict_oldest(handshaking: dict[_TlsLayer, asyncio.Transport], tls: ListenerTls) -> None:
    """Resets the worker's oldest unfinished handshake (a reset, not a close: nothing is owed to it)."""
    oldest = next(iter(handshaking))
    transport = handshaking.pop(oldest)
    peer = transport.get_extra_info("peername")
    oldest.evict(transport)
    tls.handshake_evicted(str(peer[0]) if peer else None)


def _handshake_done(
    waiter: asyncio.Future[None],
    tls: ListenerTls,
    client: str | None,
    layer: _TlsLayer,
    handshaking: dict[_TlsLayer, asyncio.Transport],
) -> None:
    handshaking.pop(layer, None)
    if not layer.evicted and not waiter.cancelled() and waiter.exception() is not None:
        tls.handshake_failed(waiter.exception(), client)  # type: ignore[arg-type]


def tls_protocol_for(inner: type[GuardedProtocol], tls: ListenerTls) -> type[asyncio.Protocol]:
    """The protocol class uvicorn instantiates per connection (its `http` setting): TLS first, then `inner`."""

    class Bound(_TlsFront):
        pass

    Bound.inner = inner
    Bound.tls = tls
    Bound.handshaking = {}
    return Bound
