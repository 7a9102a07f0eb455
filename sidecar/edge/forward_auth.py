"""Forward-auth: the same policy as a yes/no answer for an ingress (ingress-nginx, nginx, Traefik, Caddy, Envoy).

The ingress asks before it proxies: 200 with the identity headers, or 401/403 with WWW-Authenticate. No upstream is
called. The original method and URI are read only where the configured ingress puts them; any other spelling, or a
second copy, is a client's own (the ingresses pass those through) and the request is refused, as is one carrying a
method or URL override, which the application behind the ingress would act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sidecar.edge.asgi import Scope, Send
from sidecar.edge.cross_origin import answer_preflight
from sidecar.edge.decide import Decision, decide
from sidecar.edge.exchange import Exchange
from sidecar.edge.head import read_head
from sidecar.edge.runtime import Runtime, Snapshot
from sidecar.options import ServeOptions
from sidecar.policy.model import Identity, IdentityHeaders
from sidecar.reasons import Reason, Rejection
from sidecar.upstream.target import identity_header_values

__all__ = ["ORIGINAL_HEADERS", "OVERRIDE_HEADERS", "READS", "ForwardAuth", "original_request"]

# Where each ingress puts the original request (URI header, method header); None: Envoy's ext_authz, which asks
# with the original method, at path_prefix + the original path. The names are FORWARD_AUTH_INGRESSES (options.py).
READS: Final[dict[str, tuple[bytes, bytes] | None]] = {
    "ingress-nginx": (b"x-original-url", b"x-original-method"),  # its auth location sets both (absolute URL)
    "nginx": (b"x-original-uri", b"x-original-method"),  # what the README's auth_request location sets
    "traefik": (b"x-forwarded-uri", b"x-forwarded-method"),  # ForwardAuth sets both (trustForwardHeader off)
    "caddy": (b"x-forwarded-uri", b"x-forwarded-method"),  # forward_auth sets both (header_up)
    "envoy": None,
}
# Every spelling of an original URI or method that any ingress (or framework) reads, with `_` read as `-`: present
# other than as the configured ingress's one copy, it was added by the client, and the request is refused.
ORIGINAL_HEADERS: Final = frozenset(
    {b"x-original-url", b"x-original-uri", b"x-forwarded-uri", b"x-original-method", b"x-forwarded-method"}
)
# The method and URL overrides the proxy drops on the way upstream (sidecar/upstream/target.py). Here the ingress
# forwards the request and the application receives them (Symfony and Laravel read X-HTTP-Method-Override on every
# POST, IIS and Zend X-Rewrite-URL): no ingress sets one, so a client did, and the decision would not be about the
# method or path the application runs. Refused like a spoofed original, `_` read as `-`.
OVERRIDE_HEADERS: Final = frozenset(
    {b"x-http-method-override", b"x-http-method", b"x-method-override", b"x-rewrite-url"}
)
_HOST: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_~:[]")  # host[:port]


def original_request(
    reads: tuple[bytes, bytes] | None,
    headers: Sequence[tuple[bytes, bytes]],
    method: str,
    raw_path: bytes,
    prefix: bytes,
) -> tuple[str, bytes]:
    """The original (method, raw path) the ingress asks about. Raises Rejection: FORWARD_AUTH_SPOOFED when an
    original URI or method header is not the ingress's own or a method or URL override is present, INVALID_PATH
    when the request names no usable one."""
    found: dict[bytes, bytes] = {}
    for name, value in headers:
        spelled = name.replace(b"_", b"-")
        if spelled in OVERRIDE_HEADERS:
            raise Rejection(Reason.FORWARD_AUTH_SPOOFED)
        if spelled not in ORIGINAL_HEADERS:
            continue
        if reads is None or name not in reads or name in found:  # another spelling, or a second copy
            raise Rejection(Reason.FORWARD_AUTH_SPOOFED)
        found[name] = value
    if reads is None:  # Envoy ext_authz: path_prefix + the original path, with the original method
        if not raw_path.startswith(prefix + b"/"):
            raise Rejection(Reason.INVALID_PATH)
        return method, raw_path[len(prefix) :]
    uri, original_method = found.get(reads[0]), found.get(reads[1])
    if uri is None or not original_method:
        raise Rejection(Reason.INVALID_PATH)  # an ingress that does not say both is misconfigured: never guess
    return original_method.decode("latin-1").upper(), _path_of(uri)


def _refuse_underscored_identity(headers: Sequence[tuple[bytes, bytes]], names: IdentityHeaders) -> None:
    """Raises Rejection FORWARD_AUTH_SPOOFED for a client's identity header spelled with `_` (`X_Auth_User`). The
    ingress overwrites the real names with the answer's values, never this one, and Envoy and Traefik pass it on to
    the application, which PHP, uWSGI and older gunicorn and Puma read as X-Auth-User; the proxy strips it on the way
    upstream, here only a refusal keeps it from the application."""
    identity = {name.lower().encode("ascii") for name in names.names()}
    if any(b"_" in name and name.replace(b"_", b"-") in identity for name, _ in headers):
        raise Rejection(Reason.FORWARD_AUTH_SPOOFED)


def _path_of(uri: bytes) -> bytes:
    """The path of a request target as the ingress received it: origin form (`/p?q`), or absolute (`https://h/p?q`,
    ingress-nginx's X-Original-URL). Refused (INVALID_PATH) rather than guessed: control characters and spaces
    (a URL parser would silently drop tabs and newlines), a raw `#` anywhere (RFC 9112 has no fragment in a request
    target, and nginx passes it on to the application as it came, which may read it as a path character), and an
    authority that is not a plain host[:port] (ingress-nginx copies the client's Host, and nginx lets `Host: evil?`
    through: the path would become a query)."""
    if b"#" in uri or any(byte < 0x21 or byte > 0x7E for byte in uri):
        raise Rejection(Reason.INVALID_PATH)
    if not uri.startswith(b"/"):
        scheme, sep, rest = uri.partition(b"://")
        authority, slash, tail = rest.partition(b"/")
        if not sep or scheme.lower() not in (b"http", b"https") or not slash or not _HOST.issuperset(authority):
            raise Rejection(Reason.INVALID_PATH)
        uri = b"/" + tail
    return uri.partition(b"?")[0]


class ForwardAuth:
    def __init__(self, runtime: Runtime, path: str, ingress: str) -> None:
        self._runtime = runtime
        self._prefix = path.rstrip("/").encode("ascii")
        self._reads = READS[ingress]

    @classmethod
    def configured(cls, runtime: Runtime, options: ServeOptions) -> ForwardAuth | None:
        """The endpoint `serve` was asked for, or None (options.py has checked that path and ingress come together)."""
        if options.forward_auth_path is None or options.forward_auth_ingress is None:
            return None
        return cls(runtime, options.forward_auth_path, options.forward_auth_ingress)

    def owns(self, raw_path: bytes) -> bool:
        return raw_path == self._prefix or raw_path.startswith(self._prefix + b"/")

    async def answer(self, scope: Scope, send: Send, snapshot: Snapshot, rid: str, started: float) -> None:
        runtime = self._runtime
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        # The peer is the ingress: behind trusted_proxies the client is read from X-Forwarded-For (logs, per: ip).
        forwarded_for = read_head(headers).forwarded_for
        method, raw_path = scope["method"], scope.get("raw_path") or b""
        try:
            method, raw_path = original_request(self._reads, headers, method, raw_path, self._prefix)
            _refuse_underscored_identity(headers, snapshot.policy.identity_headers)
        except Rejection as rejection:
            decision = Decision(reason=rejection.reason)  # no path: the log never records one the client made up
        else:
            if method == "OPTIONS" and await answer_preflight(
                runtime, snapshot, scope, send, (method, raw_path), rid, started, forwarded_for, forward_auth=True
            ):
                return  # a CORS preflight: allowed without a token (200) or refused (403 cors_refused)
            decision = await decide(snapshot, method, raw_path, headers, runtime.audit_all)
        exchange = Exchange.begin(
            runtime, snapshot, scope, rid, method, decision, started, forwarded_for, forward_auth=True
        )
        try:
            # Refused (401/403 here: see Exchange.refuse), or allowed: 200 with the identity headers.
            if await exchange.enforce(send) and await exchange.rate_limit(send):
                await self._allow(send, snapshot, decision.identity, rid)
                exchange.answered(200)
        finally:
            exchange.finish()

    async def _allow(self, send: Send, snapshot: Snapshot, identity: Identity | None, rid: str) -> None:
        headers = [(b"content-length", b"0"), (b"cache-control", b"no-store"), (b"x-request-id", rid.encode("ascii"))]
        headers += identity_header_values(identity, snapshot.policy.identity_headers, keep_empty=True)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
