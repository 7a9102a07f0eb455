"""Fuzz targets: the request-parsing, token-parsing and upstream-response-parsing entry points, each a function of
one input's bytes.

A target returns normally for any input it handles as designed: a result, or the typed `Rejection`. Anything else
it raises is a finding: a foreign exception from the code under test, or an `AssertionError` from a broken
invariant (checked with `if ... raise`, so `python -O` keeps them). The same functions run the committed seeds and
every regression input under `make test` (tests/test_fuzz_regressions.py), without atheris.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Callable
from typing import Final, cast

from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from sidecar import h1
from sidecar.decision import Rejection
from sidecar.forwarded import origin
from sidecar.head import read_head
from sidecar.paths import normalise
from sidecar.policy.model import Identity, IdentityHeaders
from sidecar.tokens import bearer
from sidecar.upstream import HOP_BY_HOP, request_headers, response_headers
from tests.support.conformance import ENTRA_KEY, PARTNER_KEY, World

__all__ = ["TARGETS", "close", "decode_headers", "split_response_input"]

Headers = list[tuple[bytes, bytes]]

# ------------------------------------------------------------------------------------------------------- paths


def paths(data: bytes) -> None:
    """`normalise`: a path or a Rejection; a path it returns is a fixed point with no confusing spelling left."""
    try:
        path = normalise(data)
    except Rejection:
        return
    if normalise(path.encode("ascii")) != path:
        raise AssertionError("normalising twice changed the path")
    if not path.startswith("/") or any(s in path for s in ("//", "/./", "..", "\\", "?", "#")) or path.endswith("/."):
        raise AssertionError("a confusing spelling survived normalisation")
    if re.search(r"%(2[fF]|5[cC]|00)", path) is not None:
        raise AssertionError("an encoded separator or NUL survived normalisation")


# ----------------------------------------------------------------------------------------------------- headers


def decode_headers(data: bytes) -> Headers:
    """Input bytes as an ASGI header list: one `name:value` per line, names lower-cased as uvicorn delivers them."""
    headers = []
    for line in data.split(b"\n"):
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return headers


def bearer_header(data: bytes) -> None:
    """`tokens.bearer`: None, a b64token, or a Rejection."""
    try:
        token = bearer(decode_headers(data))
    except Rejection:
        return
    if token is not None and re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", token) is None:
        raise AssertionError("bearer returned something that is not a b64token")


_NAMES: Final = IdentityHeaders()
_IDENTITY: Final = Identity("contoso", {"oid": "verified-oid", "upn": "u@contoso.com", "tid": "t"}, 0)
_SIDECAR_SET: Final = {
    b"x-forwarded-for": b"192.0.2.7",
    b"x-forwarded-proto": b"https",
    b"x-request-id": b"rid-1",
    b"x-auth-subject": b"verified-oid",
    b"x-auth-user": b"u@contoso.com",
    b"x-auth-tenant": b"t",
    b"x-auth-provider": b"contoso",
}


def _key(name: bytes) -> bytes:
    return name.lower().replace(b"_", b"-")


_PEER: Final = "10.0.0.1"
_TRUSTED: Final = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))


def headers(data: bytes) -> None:
    """The request head (`read_head`), the client's address behind a trusted proxy (`forwarded.origin`), the upstream
    request headers and the client response headers: the client address is an address; the sidecar's own headers
    reach the upstream once with its values; no hop-by-hop header passes either way."""
    forward_token, client = data[:1] == b"T", decode_headers(data[1:])
    found = origin(_PEER, read_head(client).forwarded_for, _TRUSTED)
    if found.client_ip is not None:
        ipaddress.ip_address(found.client_ip)  # raises ValueError (a finding) for anything else
    out = request_headers(
        client,
        forward_token=forward_token,
        names=_NAMES,
        identity=_IDENTITY,
        client_ip=found.forwarded_for,
        scheme="https",
        request_id="rid-1",
    )
    expected = {**_SIDECAR_SET, b"x-forwarded-for": found.forwarded_for.encode("latin-1")}
    for name, value in expected.items():
        if [v for n, v in out if _key(n) == name] != [value]:
            raise AssertionError(f"{name!r} is not the sidecar's one value")
    named = {_key(token.strip()) for name, value in client if name == b"connection" for token in value.split(b",")}
    if any(_key(n) in HOP_BY_HOP for n, _ in out):
        raise AssertionError("a hop-by-hop header was passed upstream")
    if any(_key(n) in HOP_BY_HOP or _key(n) in named for n, _ in response_headers(client)):
        raise AssertionError("a hop-by-hop or Connection-named header was passed to the client")
    if not forward_token and any(_key(n) == b"authorization" for n, _ in out):
        raise AssertionError("Authorization forwarded on a route that does not forward the token")


# ------------------------------------------------------------------------------------------------------ tokens

_world: World | None = None
_ES256: Final = ECAlgorithm(ECAlgorithm.SHA256)
_RS256: Final = RSAAlgorithm(RSAAlgorithm.SHA256)
_ALL_PROVIDERS: Final = frozenset({"contoso", "partner", "opaque"})


def _the_world() -> World:
    """One World per process: its issuers, verifier and introspection endpoints behind mock transports."""
    global _world
    if _world is None:
        _world = World()
    return _world


def close() -> None:
    """Close the tokens target's World (for tests; a fuzzing process just exits)."""
    global _world
    if _world is not None:
        _world.close()
        _world = None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _signed(header: bytes, payload: bytes, entra: bool = False) -> str:
    """Any header and payload bytes under a valid signature (the partner's ES256 key, or Entra's RS256 key, which
    is ~20x slower to sign with): past the signature check, into claims handling."""
    signing_input = f"{_b64(header)}.{_b64(payload)}".encode()
    signature = (
        _RS256.sign(signing_input, ENTRA_KEY.private) if entra else _ES256.sign(signing_input, PARTNER_KEY.private)
    )
    return f"{signing_input.decode()}.{_b64(signature)}"


_PARTNER_HEADER: Final = b'{"alg":"ES256","kid":"partner-1","typ":"at+jwt"}'
_ENTRA_HEADER: Final = b'{"alg":"RS256","kid":"entra-1","typ":"JWT"}'


def tokens(data: bytes) -> None:
    """`Verifier.verify` and `decide()`: an Identity (or a Decision) or a Rejection. The first byte picks the form:
    `t` the rest as token text; `p` / `e` the rest as a payload signed with the partner's / Entra's key; `h` header
    and payload (split at the first NUL) signed; `i` the rest as an introspection endpoint's answer; anything else:
    up to three NUL-separated parts, each base64url-encoded and joined with dots."""
    world = _the_world()
    mode, rest = data[:1], data[1:]
    if mode == b"p":
        token = _signed(_PARTNER_HEADER, rest)
    elif mode == b"e":
        token = _signed(_ENTRA_HEADER, rest, entra=True)
    elif mode == b"h":
        header, _, payload = rest.partition(b"\x00")
        token = _signed(header, payload)
    elif mode == b"i":
        world.idp.body, world.idp.calls = rest, []
        token = "opaque-" + hashlib.sha256(rest).hexdigest()  # one cache entry per answer
    elif mode == b"t":
        token = rest.decode("latin-1")
    else:
        token = ".".join(_b64(part) for part in data.split(b"\x00", 2))
    try:
        world.verify(token, frozenset({"opaque"}) if mode == b"i" else _ALL_PROVIDERS)
    except Rejection:
        pass
    decision = world.decide("/mixed" if mode == b"i" else "/any", token)
    if decision.reason is None and decision.identity is None:
        raise AssertionError("a token route allowed a request without an identity")
    world.idp.body = None


# ------------------------------------------------------------------------------------------- upstream_response


class _Link:
    """The connection under a Response: it is only told to pause, resume or abort."""

    def __init__(self) -> None:
        self.paused = False
        self.aborted = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def abort(self) -> None:
        self.aborted = True


def split_response_input(data: bytes) -> tuple[bool, bool, list[bytes]]:
    """The first byte: bit 0 the request was HEAD, bit 1 the upstream closes after the last piece, bits 2-7 how many
    of the input's last bytes are piece lengths (taken from the end, as libFuzzer's FuzzedDataProvider takes its
    integers, so the response bytes come first); the response bytes are fed in those pieces, then the rest."""
    flags, stream = (data[0], data[1:]) if data else (0, b"")
    lengths = stream[max(len(stream) - (flags >> 2), 0) :] if flags >> 2 else b""
    stream = stream[: len(stream) - len(lengths)]
    pieces = []
    for length in lengths:
        pieces.append(stream[:length])
        stream = stream[length:]
    return bool(flags & 1), bool(flags & 2), [*pieces, stream]


def _read_now(response: h1.Response) -> bytes:
    """`Response.read` up to its first wait: it returns the pieces that have arrived without one."""
    reading = response.read(1.0)
    try:
        reading.send(None)
    except StopIteration as done:
        return cast(bytes, done.value)
    reading.close()
    raise AssertionError("read() waited with body pieces in hand")


def _content_length(headers: Headers) -> int | None:
    """The length the upstream declared, read as RFC 9110 does (optional whitespace around the digits)."""
    values = [value.strip(b" \t") for name, value in headers if name.lower() == b"content-length"]
    return int(values[0]) if values and values[0].isdigit() else None


class _Response(h1.Response):
    """An h1.Response that also notes what it held when its final head was done: the proxy sends that head on, and
    a response arriving in one piece is already whole by the time the fuzzer looks."""

    final_head: tuple[int, Headers] | None = None
    early_body = 0  # body bytes held when the final head was done

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.head_done and self.final_head is None:
            self.final_head, self.early_body = (self.status, list(self.headers)), self._buffered


class _Watch:
    """What a Response has shown so far, and the invariants between one look and the next."""

    def __init__(self, response: _Response, link: _Link, no_body: bool) -> None:
        self.response, self.link, self.no_body = response, link, no_body
        self.body = b""
        self.before_head = 0  # bytes fed while the head was not yet done
        self.whole: tuple[int, Headers, bytes] | None = None

    def feed(self, piece: bytes) -> None:
        counted, done = self.before_head, self.response.head_done
        if not done:
            self.before_head += len(piece)
        self.response.feed(piece)  # whatever escapes feed() is a finding
        if self.response.error is None and not self.response.head_done and self.before_head > h1._MAX_HEAD:
            raise AssertionError("a response head grew past the limit without failing")
        if self.response.head_done and not done and counted > h1._MAX_HEAD:
            raise AssertionError("a response head past the limit was accepted")
        self.look()

    def look(self) -> None:
        response = self.response
        if response.error is not None and (response.keep_alive or not self.link.aborted):
            raise AssertionError("a failed response left its connection open for reuse")
        if response._pieces:
            self.body += _read_now(response)
        if response.final_head is not None:
            self._head(response.final_head, response.early_body, (response.status, response.headers))
        if self.no_body and self.body:
            raise AssertionError("the answer to HEAD has a body")
        if response.complete and response.error is None and response.final_head is not None:
            self._whole(response.status, response.headers, response.final_head[1])

    def _head(self, head: tuple[int, Headers], early_body: int, now: tuple[int, Headers]) -> None:
        status, headers = head
        if not 200 <= status <= 599:
            raise AssertionError(f"final status {status} outside 200-599")
        if len(headers) > h1._MAX_HEADERS:
            raise AssertionError("more headers than the limit")
        if early_body:
            raise AssertionError("body bytes arrived before the final head (an interim response's body)")
        if now != head:
            raise AssertionError("the head changed after it was done (a trailer or a second response)")

    def _whole(self, status: int, headers: Headers, head: Headers) -> None:
        if self.whole is None:
            self.whole = (status, list(headers), self.body)
            length = None if self.no_body or status in (204, 304) else _content_length(head)
            if length is not None and len(self.body) != length:
                raise AssertionError(f"a complete body of {len(self.body)} bytes under Content-Length {length}")
        elif self.whole != (status, headers, self.body):
            raise AssertionError("bytes after a complete response changed it (a second response accepted)")


def upstream_response(data: bytes) -> None:
    """`h1.Response` fed an upstream's bytes in fuzzer-chosen pieces (see `split_response_input`), then maybe the
    upstream's close: nothing escapes `feed()`/`ended()`; a final head has a 2xx-5xx status, at most 256 headers
    and 64 KiB, and never changes; HEAD gets no body; a complete response keeps its Content-Length and is never
    changed by later bytes; a failure is never kept alive; a close never ends a body framed by length or chunks."""
    no_body, close, pieces = split_response_input(data)
    link = _Link()
    response = _Response(cast(h1.Connection, link), no_body)
    watch = _Watch(response, link, no_body)
    for piece in pieces:
        watch.feed(piece)
    if close:
        framed = response.head_done and not response.complete and response.keep_alive  # llhttp needs no close
        response.ended()
        watch.look()
        if framed and response.complete and response.error is None:
            raise AssertionError("the upstream's close ended a body framed by length or chunks (cut short)")


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "paths": paths,
    "bearer": bearer_header,
    "headers": headers,
    "tokens": tokens,
    "upstream_response": upstream_response,
}
