"""What goes upstream: the target URL (the upstream's own query wins) and the filtered request headers.

Pure: no I/O, no HTTP client. The proxy calls these with what the gate decided.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote_plus, urlsplit

from sidecar.policy.model import Identity, IdentityHeaders

__all__ = [
    "Target",
    "identity_header_values",
    "request_headers",
    "response_headers",
    "target",
    "target_url",
]

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 hop-by-hop headers, plus the non-standard ones proxies still see.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Set by the sidecar itself: a client's copy is never passed on (nor any other X-Forwarded-*: see _forwards).
_SET_BY_SIDECAR: Final = frozenset(
    {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"}
)
# Headers by which an upstream framework runs another method or serves another URL than the one the policy allowed
# (ASP.NET/Google/Rails-style method overrides, OData's X-HTTP-Method, IIS/Symfony X-Original-URL and X-Rewrite-URL),
# and other spellings of the client's address: never passed on.
_OVERRIDES: Final = frozenset(
    {
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-original-method",
        b"x-original-url",
        b"x-original-uri",
        b"x-rewrite-url",
        b"forwarded",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
    }
)
# What the sidecar relies on in the request it forwards: `Connection` cannot name these away (RFC 9110 lets a
# client name any header; removing the body's length or a forwarded credential is not the client's call here).
_NOT_NAMEABLE: Final = frozenset({b"authorization", b"content-length"})
# Framing headers spelled with `_`: an upstream that reads `_` as `-` would frame the body differently.
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Target:
    """An upstream URL split once: the secret query stays here and is never logged."""

    origin: str  # scheme://host[:port]
    path: str  # already percent-encoded as written in the policy
    query: str  # the upstream's own query string, as written
    query_names: frozenset[str]  # its parameter names, decoded and lower-cased

    def redacted(self) -> str:
        """For logs: origin and path only, never the query (it holds the SAS signature)."""
        return self.origin + self.path


@functools.lru_cache(maxsize=1024)
def target(upstream: str) -> Target:
    parts = urlsplit(upstream)
    names = frozenset(_param_name(pair) for pair in parts.query.split("&") if pair)
    return Target(f"{parts.scheme}://{parts.netloc}", parts.path, parts.query, names)


def target_url(upstream: Target, rest: str, client_query: bytes) -> str:
    """The URL to call: the upstream path (+ the rest of a prefix route's path) and a query in which the
    upstream's own parameters win. A client parameter whose decoded name equals one of them, ignoring ASCII
    case (`sig`, `SIG`, `%53ig`), is dropped: the endpoints behind trigger URLs read names case-insensitively."""
    path = upstream.path.rstrip("/") + rest if rest else upstream.path
    query = upstream.query
    if client_query:
        kept = [pair for pair in client_query.decode("latin-1").split("&") if _keeps(pair, upstream.query_names)]
        if kept:
            query = "&".join([query, *kept]) if query else "&".join(kept)
    url = upstream.origin + (path or "/")
    return url + "?" + query if query else url


def _keeps(pair: str, upstream_names: frozenset[str]) -> bool:
    return bool(pair) and _param_name(pair) not in upstream_names


def _param_name(pair: str) -> str:
    return unquote_plus(pair.partition("=")[0], errors="replace").lower()


def _header_key(name: bytes) -> bytes:
    """Header names compared the way lenient servers read them: case-insensitive, `_` as `-`."""
    return name.lower().replace(b"_", b"-")


@functools.lru_cache(maxsize=64)
def _dropped(names: IdentityHeaders, forward_token: bool) -> frozenset[bytes]:
    """Always dropped, by `_header_key`: hop-by-hop, the sidecar's own, overrides, identity headers, the token."""
    identity = (_header_key(name.encode("ascii")) for name in names.names())
    token = () if forward_token else (b"authorization",)
    return HOP_BY_HOP | _SET_BY_SIDECAR | _OVERRIDES | frozenset(identity) | frozenset(token)


def _forwards(name: bytes, dropped: frozenset[bytes], named: frozenset[bytes]) -> bool:
    key = _header_key(name)
    if key in dropped or key in named or key.startswith(b"x-forwarded-"):
        return False
    return key == name or key not in _FRAMING


def request_headers(
    client: Sequence[tuple[bytes, bytes]],
    *,
    forward_token: bool,
    names: IdentityHeaders,
    identity: Identity | None,
    client_ip: str,
    scheme: str,
    request_id: str,
) -> Headers:
    """Headers for the upstream request: hop-by-hop and `Connection`-named ones dropped (but `Connection` cannot
    remove `Authorization` or `Content-Length`), client copies of identity headers, X-Forwarded-* and method or URL
    overrides always removed (also `_` variants), `Authorization` kept only with `forward_token`, then the
    sidecar's own headers set last so nothing a client sends can remove or replace them. `client_ip` is the
    X-Forwarded-For value: the client's address, or behind trusted proxies the chain received plus the peer."""
    dropped = _dropped(names, forward_token)
    named: frozenset[bytes] = frozenset()
    host = b""
    for name, value in client:
        if name == b"connection":
            named = named.union(_header_key(token.strip()) for token in value.split(b",")) - _NOT_NAMEABLE
        elif name == b"host":
            host = value
    out: Headers = [(name, value) for name, value in client if _forwards(name, dropped, named)]
    out.append((b"x-forwarded-for", client_ip.encode("latin-1")))
    out.append((b"x-forwarded-proto", scheme.encode("ascii")))
    if host:
        out.append((b"x-forwarded-host", host))
    out.append((b"x-request-id", request_id.encode("ascii")))
    if identity is not None:
        out.extend(identity_header_values(identity, names))
    return out


def identity_header_values(identity: Identity | None, names: IdentityHeaders, keep_empty: bool = False) -> Headers:
    """The caller's verified identity as headers; a claim the token lacks is left out, or with `keep_empty` sent
    empty (forward-auth: an ingress copying these headers must overwrite a client's copy, not keep it)."""
    values = (
        (names.subject, identity.subject if identity else None),
        (names.user, identity.user if identity else None),
        (names.tenant, identity.tenant if identity else None),
        (names.roles, ",".join(identity.roles) or None if identity else None),
        (names.provider, identity.provider if identity else None),
    )
    return [(name.lower().encode("ascii"), _header_value(value or "")) for name, value in values if value or keep_empty]


def _header_value(value: str) -> bytes:
    # Claims are the issuer's, but a header must not carry CR/LF or non-Latin-1 text.
    return value.encode("utf-8").replace(b"\r", b" ").replace(b"\n", b" ")


def response_headers(upstream: Iterable[tuple[bytes, bytes]]) -> Headers:
    """Upstream response headers for the client: hop-by-hop and `Connection`-named ones dropped, and the
    upstream's X-Request-Id (the sidecar sends its own). Compared as lenient parsers read names (`_` as `-`): a
    `Transfer_Encoding` passed on could frame the response differently for a proxy between us and the client."""
    pairs = list(upstream)
    dropped = set(HOP_BY_HOP)
    dropped.add(b"x-request-id")
    for name, value in pairs:
        if name.lower() == b"connection":
            dropped.update(_header_key(token.strip()) for token in value.split(b","))
    return [(name, value) for name, value in pairs if _header_key(name) not in dropped]
