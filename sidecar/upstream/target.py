"""What goes upstream: the target URL (the upstream's own query wins) and the filtered request headers; and what
of the upstream's response headers goes back (`response_urls` rewrites the ones naming the upstream's URL).

Pure: no I/O, no HTTP client. The proxy calls these with what the gate decided.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import unquote_to_bytes, urlsplit

from sidecar.policy.model import Identity, IdentityHeaders

__all__ = [
    "UrlRewriter",
    "Target",
    "identity_header_values",
    "param_skeleton",
    "query_params",
    "request_headers",
    "response_headers",
    "shadows",
    "target",
    "target_url",
]

Headers = list[tuple[bytes, bytes]]


class UrlRewriter(Protocol):
    """What `response_headers` asks about headers naming the upstream's URL (edge/response_urls.py answers)."""

    def rewritten(self, key: bytes, value: bytes, url: str) -> bytes | None: ...

    def without_secrets(self, headers: Headers) -> Headers: ...


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
# .NET's (System.Web) non-standard escape of one UTF-16 unit, decoded by `HttpUtility.UrlDecode` as `%XX` is.
_PERCENT_U: Final = re.compile(rb"%[uU]([0-9a-fA-F]{4})")
# How often a query pair may decode before it is read as no client means it: a name or value escaped more often than
# this is dropped, and reading one costs at most this many passes.
_DECODINGS: Final = 8
# What separates pairs to some parser once the query is decoded: `&`, and `;` (older Python and Go).
_SEPARATORS: Final = re.compile("[&;]")
# C0 (NUL, CR, LF, tab...), DEL and C1: replaced by a space in identity header values.
_CONTROLS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BRACKET: Final = re.compile(r"[\[\]]")
# An escape whose decoded byte or character is none of `%`, `&` and `;`: its `%` never becomes a separator, however
# often the pair is decoded (what it decodes to is no `%`, so starts no further escape). Every other `%` may.
_INERT_ESCAPE: Final = re.compile(rb"%(?:(?!2[56]|3[bB])[0-9a-fA-F]{2}|[uU](?!00(?:2[56]|3[bB]))[0-9a-fA-F]{4})")
# A pair (not empty; no `%`, `&` or `;`: nothing decodes, nothing splits) whose name is ASCII letters, digits, `-`,
# `_` and `.` (no NUL or bracket: every parser reads it as written): its skeleton is its letters and digits lowered.
_PLAIN_PAIR: Final = re.compile(r"(?=.)([A-Za-z0-9._-]*)(?:=[^%&;]*)?")
_NOT_ALNUM: Final = str.maketrans("", "", "._-")


@dataclass(frozen=True, slots=True)
class Target:
    """An upstream URL split once: the secret query stays here and is never logged."""

    origin: str  # scheme://host[:port]
    path: str  # already percent-encoded as written in the policy
    query: str  # the upstream's own query string, as written
    query_names: frozenset[str]  # its parameter names' skeletons (`param_skeleton`)

    def redacted(self) -> str:
        """For logs: origin and path only, never the query (it holds the SAS signature)."""
        return self.origin + self.path


@functools.lru_cache(maxsize=1024)
def target(upstream: str) -> Target:
    parts = urlsplit(upstream)
    names = frozenset(param_skeleton(_decoded(name) or name) for name in _names(parts.query))
    return Target(f"{parts.scheme}://{parts.netloc}", parts.path, parts.query, names)


def target_url(upstream: Target, rest: str, client_query: bytes) -> str:
    """The URL to call: the upstream path (+ the rest of a prefix route's path) and a query in which the
    upstream's own parameters win: a client parameter that some framework could read as one of them is dropped
    (`shadows`). Other client parameters are appended as sent."""
    path = upstream.path.rstrip("/") + rest if rest else upstream.path
    query = upstream.query
    if client_query:
        pairs = client_query.decode("latin-1").split("&")
        kept = [pair for pair in pairs if pair and not shadows(pair, upstream.query_names)]
        if kept:
            query = "&".join([query, *kept]) if query else "&".join(kept)
    url = upstream.origin + (path or "/")
    return url + "?" + query if query else url


def query_params(client_query: bytes) -> int:
    """At most how many parameters `shadows` reads in `client_query`, counted on its bytes before any is read: the
    pairs between `&`, plus each `;` and each `%` that decoding could turn into a separator (`%26`, `%3B`, `%25`, their
    `%u00XX` forms, a `%` that starts no escape). Each parameter read costs microseconds on the event loop: a route
    refuses a query over its `max_query_params` before any is."""
    if not client_query:
        return 0
    separators = client_query.count(b"&") + client_query.count(b";")
    return 1 + separators + client_query.count(b"%") - len(_INERT_ESCAPE.findall(client_query))


def _names(query: str) -> Iterable[str]:
    return (pair.partition("=")[0] for pair in query.split("&") if pair)


def shadows(pair: str, names: frozenset[str]) -> bool:
    """Whether some framework could read the query `pair` (Latin-1 text of its bytes) as a parameter whose skeleton is
    in `names`. The pair is decoded as far as it decodes (`%XX` and `%uXXXX`, again and again: servers that decode
    twice, or the whole query before splitting it), then every part between `&` and `;` counts, each name read as
    C parsers (cut at a NUL), PHP and Rails (cut at `[`) and Rack 2 (leading brackets stripped) read it. A pair still
    decoding after `_DECODINGS` passes is dropped too: no client means that. A plain pair (`_PLAIN_PAIR`, the common
    one) is answered at once: the full reading gives it the same answer (tests/test_properties_query.py)."""
    plain = _PLAIN_PAIR.fullmatch(pair)
    if plain is not None:
        return plain.group(1).translate(_NOT_ALNUM).lower() in names
    return _read_as_any(pair, names)


def _read_as_any(pair: str, names: frozenset[str]) -> bool:
    """`shadows` without its fast path: every reading of the pair."""
    decoded = _decoded(pair)
    if decoded is None:
        return True
    for part in _SEPARATORS.split(decoded):
        if part and any(param_skeleton(read) in names for read in _reads(part.partition("=")[0])):
            return True
    return False


def _decoded(raw: str) -> str | None:
    """`raw` percent-decoded until nothing changes (as UTF-8, invalid bytes as U+FFFD), or None past `_DECODINGS`."""
    try:
        data = raw.encode("latin-1")  # a client query's bytes, as the listener gave them
    except UnicodeEncodeError:
        data = raw.encode("utf-8")  # an upstream URL written with other characters in the policy
    for _ in range(_DECODINGS + 1):
        step = unquote_to_bytes(_PERCENT_U.sub(_utf16_unit, data))
        if step == data:
            return data.decode("utf-8", "replace")
        data = step
    return None


def _utf16_unit(match: re.Match[bytes]) -> bytes:
    return chr(int(match.group(1), 16)).encode("utf-8", "surrogatepass")


def _reads(name: str) -> set[str]:
    """The names a parser may read: as written, cut at a NUL (C parsers), cut at `[` (PHP and Rails: `sig[]`), and
    Rack 2's first run of non-brackets after any leading ones (`[]sig`, `]sig`, `[sig]`)."""
    reads: set[str] = set()
    for whole in (name, name.partition("\x00")[0]):
        reads.update((whole, whole.partition("[")[0], _BRACKET.split(whole.lstrip("[]"), maxsplit=1)[0]))
    return reads


def param_skeleton(name: str) -> str:
    """A decoded parameter name reduced to what no lenient parser tells apart: compatibility-decomposed (fullwidth
    letters, `ſ`), case folded as .NET and Unicode do (`SIG`, `ı`), and every character that is not a letter or digit
    removed (blanks, `+`, `.`, `_`, `-` and brackets, which PHP turns into `_` or trims; zero-width characters, the
    BOM, controls and combining marks). Two names with the same skeleton are the same name here."""
    folded = unicodedata.normalize("NFKD", name).upper().lower()
    folded = unicodedata.normalize("NFKD", folded.casefold())
    return "".join(char for char in folded if char.isalnum())


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
    """A claim as a header value: every control character a space and blanks trimmed (RFC 9110 §5.5: no CR/LF, no
    NUL, no other control in a field value). Claims are the issuer's, but a CR/LF would start another header line, a
    NUL cuts the value short for C parsers (`admin@corp.com\\0x` read as `admin@corp.com`), and the listener refuses to
    send any of them (forward-auth's answer would fail). UTF-8, as issuers write non-ASCII names."""
    return _CONTROLS.sub(" ", value).strip(" ").encode("utf-8")


def response_headers(
    upstream: Iterable[tuple[bytes, bytes]],
    status: int = 200,
    urls: UrlRewriter | None = None,
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
