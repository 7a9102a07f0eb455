"""What goes upstream: the target URL (the upstream's own query wins) and the filtered request headers; and what
of the upstream's response headers goes back (`response_urls` rewrites the ones naming the upstream's URL).

Pure: no I/O, no HTTP client. The proxy calls these with what the gate decided.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, unquote_plus, urlsplit

from sidecar.policy.model import Identity, IdentityHeaders

if TYPE_CHECKING:
    from sidecar.response_urls import ResponseUrls

__all__ = [
    "Target",
    "identity_header_values",
    "param_key",
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
# Answered by the sidecar's own listener, which sends `100 Continue` when the body is first read; the body then goes
# upstream at once, so an upstream told to expect it would wait for nothing (or answer 417).
_ANSWERED_HERE: Final = frozenset({b"expect"})
# RFC 9110 §8.6 forbids Content-Length on a 204. On a 304 it is allowed, but the listener (uvicorn) would then wait for
# that many body bytes and fail the answer, so it is dropped there too, except in the answer to HEAD (which the
# listener knows has no body, and which keeps its length whatever its status).
_NO_CONTENT: Final = 204
_NOT_MODIFIED: Final = 304
# PHP turns spaces and dots in a parameter name into `_` (and so, here, every other blank).
_NAME_BLANKS: Final = str.maketrans({" ": "_", ".": "_", "\t": "_", "\n": "_", "\r": "_", "\x0b": "_", "\x0c": "_"})


@dataclass(frozen=True, slots=True)
class Target:
    """An upstream URL split once: the secret query stays here and is never logged."""

    origin: str  # scheme://host[:port]
    path: str  # already percent-encoded as written in the policy
    query: str  # the upstream's own query string, as written
    query_names: frozenset[str]  # its parameter names, as `param_key` reads them

    def redacted(self) -> str:
        """For logs: origin and path only, never the query (it holds the SAS signature)."""
        return self.origin + self.path


@functools.lru_cache(maxsize=1024)
def target(upstream: str) -> Target:
    parts = urlsplit(upstream)
    names = frozenset(param_key(pair.partition("=")[0]) for pair in parts.query.split("&") if pair)
    return Target(f"{parts.scheme}://{parts.netloc}", parts.path, parts.query, names)


def target_url(upstream: Target, rest: str, client_query: bytes) -> str:
    """The URL to call: the upstream path (+ the rest of a prefix route's path) and a query in which the
    upstream's own parameters win. A client parameter that some framework could read as one of them is dropped
    (see `param_key`; a `;` inside a pair separates parameters to older parsers, so each part counts): the
    endpoints behind trigger URLs read names case-insensitively, and PHP and others let the last copy win."""
    path = upstream.path.rstrip("/") + rest if rest else upstream.path
    query = upstream.query
    if client_query:
        kept = [pair for pair in client_query.decode("latin-1").split("&") if _keeps(pair, upstream.query_names)]
        if kept:
            query = "&".join([query, *kept]) if query else "&".join(kept)
    url = upstream.origin + (path or "/")
    return url + "?" + query if query else url


def _keeps(pair: str, upstream_names: frozenset[str]) -> bool:
    return bool(pair) and not any(param_key(part.partition("=")[0]) in upstream_names for part in pair.split(";"))


def param_key(raw: str) -> str:
    """A query parameter's name as the most lenient parsers read it, for comparison only: percent-decoded (`+` as
    space; twice more for servers that decode again, `%2573ig`), cut at a NUL (C parsers) and at `[` (PHP and Rails
    read `sig[]` as `sig`), blanks and dots as `_` and `_` trimmed from both ends (PHP reads `+sig`, ` sig` and `sig.`
    as `sig` or `sig_`), and case folded as .NET and Unicode compatibility do (`SIG`, `ſig`, fullwidth letters)."""
    if not raw.isascii():  # a client query arrives as Latin-1 text of its bytes: read raw UTF-8 as such
        raw = raw.encode("latin-1", "replace").decode("utf-8", "replace")
    name = unquote_plus(raw, errors="replace")
    for _ in range(2):
        if "%" not in name:
            break
        name = unquote(name, errors="replace")
    name = name.partition("\x00")[0].partition("[")[0]
    if not name.isascii():
        name = unicodedata.normalize("NFKC", name).upper()
    return name.lower().translate(_NAME_BLANKS).strip("_")


def _header_key(name: bytes) -> bytes:
    """Header names compared the way lenient servers read them: case-insensitive, `_` as `-`."""
    return name.lower().replace(b"_", b"-")


@functools.lru_cache(maxsize=64)
def _dropped(names: IdentityHeaders, forward_token: bool) -> frozenset[bytes]:
    """Always dropped, by `_header_key`: hop-by-hop, the sidecar's own, overrides, identity headers, the token,
    `Expect`."""
    identity = (_header_key(name.encode("ascii")) for name in names.names())
    token = () if forward_token else (b"authorization",)
    return HOP_BY_HOP | _SET_BY_SIDECAR | _OVERRIDES | _ANSWERED_HERE | frozenset(identity) | frozenset(token)


def _passes(name: bytes, key: bytes, dropped: frozenset[bytes] | set[bytes]) -> bool:
    """Both ways: not dropped as lenient parsers read its name (`key`), nor a framing header spelled with `_`."""
    return key not in dropped and (key not in _FRAMING or b"_" not in name)


def _forwards(name: bytes, dropped: frozenset[bytes], named: frozenset[bytes]) -> bool:
    key = _header_key(name)
    return key not in named and not key.startswith(b"x-forwarded-") and _passes(name, key, dropped)


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


def response_headers(
    upstream: Iterable[tuple[bytes, bytes]],
    status: int = 200,
    urls: ResponseUrls | None = None,
    url: str = "",
    head: bool = False,
) -> Headers:
    """Upstream response headers for the client: hop-by-hop and `Connection`-named ones dropped, and the
    upstream's X-Request-Id (the sidecar sends its own). Compared as lenient parsers read names (`_` as `-`): a
    `Transfer_Encoding` or `Content_Length` passed on could frame the response differently for a proxy between us
    and the client. No Content-Length on a 204, nor on a 304 unless it answers HEAD (`head`). With `urls`, headers
    naming the upstream's URL are rewritten to the route's public path (`url`: the one the request went to), and none
    that holds the upstream's secret query passes."""
    pairs = list(upstream)
    dropped = set(HOP_BY_HOP)
    dropped.add(b"x-request-id")
    if status == _NO_CONTENT or (status == _NOT_MODIFIED and not head):
        dropped.add(b"content-length")
    for name, value in pairs:
        if name.lower() == b"connection":
            dropped.update(_header_key(token.strip()) for token in value.split(b","))
    out: Headers = []
    for name, value in pairs:
        key = _header_key(name)
        if not _passes(name, key, dropped):
            continue
        if urls is not None:
            shown = urls.rewritten(key, value, url)
            if shown is None:
                continue
            value = shown
        out.append((name, value))
    return out if urls is None else urls.without_secrets(out)
