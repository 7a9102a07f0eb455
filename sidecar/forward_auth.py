"""Forward-auth: the same policy as a yes/no answer for an ingress (ingress-nginx, Traefik, Envoy ext_authz).

The ingress asks before it proxies: 200 with the identity headers, or 401/403 with WWW-Authenticate. No upstream is
called. The original method and URI come from the ingress's headers, or (Envoy's `path_prefix`) from the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from sidecar.asgi import Scope, Send
from sidecar.cors import answer_preflight
from sidecar.decide import decide
from sidecar.decision import Reason, outcome
from sidecar.exchange import count_refusal, finish, refusal_headers, refuse, start_entry
from sidecar.forwarded import origin
from sidecar.head import read_head
from sidecar.policy.model import Identity
from sidecar.runtime import Runtime, Snapshot
from sidecar.upstream import identity_header_values

__all__ = ["ForwardAuth", "original_request"]

# Where each ingress puts the original request. ingress-nginx: X-Original-URL (absolute) and X-Original-Method;
# plain nginx auth_request set-ups: X-Original-URI; Traefik ForwardAuth: X-Forwarded-Uri and X-Forwarded-Method.
_URI_HEADERS: Final = (b"x-original-url", b"x-original-uri", b"x-forwarded-uri")
_METHOD_HEADERS: Final = (b"x-original-method", b"x-forwarded-method")


def original_request(
    headers: Sequence[tuple[bytes, bytes]], method: str, raw_path: bytes, prefix: bytes
) -> tuple[str, bytes] | None:
    """The original (method, raw path) the ingress asks about, or None when the request does not say."""
    found = {name: value for name, value in headers if name in _URI_HEADERS or name in _METHOD_HEADERS}
    original_method = next((found[h] for h in _METHOD_HEADERS if h in found), method.encode("ascii"))
    for header in _URI_HEADERS:
        if header in found:
            value = found[header]
            if any(byte < 0x21 or byte > 0x7E for byte in value):
                return None  # urlsplit would silently drop tabs and newlines: refuse rather than guess
            path = urlsplit(value.decode("ascii")).path
            return original_method.decode("latin-1").upper(), path.encode("latin-1")
    if raw_path.startswith(prefix + b"/"):  # Envoy ext_authz: path_prefix + the original path
        return original_method.decode("latin-1").upper(), raw_path[len(prefix) :]
    return None


class ForwardAuth:
    def __init__(self, runtime: Runtime, path: str) -> None:
        self._runtime = runtime
        self._prefix = path.rstrip("/").encode("ascii")

    def owns(self, raw_path: bytes) -> bool:
        return raw_path == self._prefix or raw_path.startswith(self._prefix + b"/")

    async def answer(self, scope: Scope, send: Send, snapshot: Snapshot, rid: str, started: float) -> None:
        runtime = self._runtime
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        asked = original_request(headers, scope["method"], scope.get("raw_path") or b"", self._prefix)
        method, raw_path = asked if asked is not None else (scope["method"], b"")
        # The peer is the ingress: behind trusted_proxies the client is read from X-Forwarded-For (logs, per: ip).
        forwarded_for = read_head(headers).forwarded_for
        if method == "OPTIONS" and await answer_preflight(
            runtime, snapshot, scope, send, (method, raw_path), rid, started, forwarded_for, forward_auth=True
        ):
            return  # a CORS preflight: allowed without a token (200) or refused (403 cors_refused)
        decision = await decide(snapshot, method, raw_path, headers, runtime.audit_all)
        entry = start_entry(scope, rid, method, decision)
        entry["forward_auth"] = True
        entry["client_ip"] = origin(entry["client_ip"], forwarded_for, snapshot.policy.trusted_proxies).client_ip
        try:
            if decision.route is not None and decision.route.rate_limit is not None:
                await runtime.limiter.admit(decision, entry)  # only allowed requests count
            if decision.reason is not None:
                count_refusal(runtime.metrics, decision)
            if decision.forwarded:
                await self._allow(send, snapshot, decision.identity, rid)
                entry.update(status=200, decision="allow" if decision.reason is None else "audit_forward")
                return
            reason = decision.reason or Reason.INVALID_PATH
            # nginx auth_request understands only 2xx, 401 and 403: every other refusal is a 403 here.
            status = 401 if outcome(reason).status == 401 else 403
            entry["decision"] = "reject"
            route = decision.route.name if decision.route is not None else None
            extra = refusal_headers(decision, headers, method)
            await refuse(send, reason, snapshot.policy.realm, rid, route, entry, status=status, extra=extra)
        finally:
            finish(runtime.metrics, entry, started)

    async def _allow(self, send: Send, snapshot: Snapshot, identity: Identity | None, rid: str) -> None:
        headers = [(b"content-length", b"0"), (b"cache-control", b"no-store"), (b"x-request-id", rid.encode("ascii"))]
        headers += identity_header_values(identity, snapshot.policy.identity_headers, keep_empty=True)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
