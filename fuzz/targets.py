"""Fuzz targets: the request-parsing, token-parsing, key-parsing and upstream-response-parsing entry points, each a
function of one input's bytes.

A target returns normally for any input it handles as designed: a result, or the typed `Rejection`. Anything else
it raises is a finding: a foreign exception from the code under test, or an `AssertionError` from a broken
invariant (checked with `if ... raise`, so `python -O` keeps them). The same functions run the committed seeds and
every regression input under `make test` (tests/test_fuzz_regressions.py), without atheris.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any, Final

from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fuzz.response_target import split_response_input, upstream_response
from sidecar.auth.bearer import bearer
from sidecar.auth.discovery import jwks_uri_of
from sidecar.auth.issuer_http import FetchError
from sidecar.auth.jwks import (
    ASYMMETRIC_ALGORITHMS,
    MAX_JWKS_KEYS,
    MAX_KEYS_PER_KID,
    JwksError,
    Key,
    find,
    index,
    parse_jwks,
)
from sidecar.edge.forwarded import origin
from sidecar.edge.head import read_head
from sidecar.edge.paths import normalise
from sidecar.policy.model import Identity, IdentityHeaders
from sidecar.reasons import Rejection
from sidecar.upstream.target import HOP_BY_HOP, request_headers, response_headers
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


# ------------------------------------------------------------------------------------------------- jwks, discovery

_GOOD_JWK: Final = {**PARTNER_KEY.jwk(), "kid": "fuzz-good"}
_SIGNED: Final = b"fuzz.input"
_GOOD_SIGNATURE: Final = _ES256.sign(_SIGNED, PARTNER_KEY.private)
_ISSUERS: Final = frozenset({"https://issuer.test"})


def _jwks_keys(document: dict[str, Any]) -> list[Key]:
    try:
        keys = parse_jwks(document, "fuzz")
    except JwksError:
        return []
    for key in keys:
        if not key.algorithms or not key.algorithms <= ASYMMETRIC_ALGORITHMS:
            raise AssertionError("a key kept for no algorithm, or for a symmetric one")
    return keys


def jwks(data: bytes) -> None:
    """`parse_jwks`, `index`, `find` and the discovery reader (`jwks_uri_of`) on any JSON document: keys or a
    JwksError, a jwks_uri or a FetchError. A good ES256 key put among the document's keys (at the place the first
    byte picks) still verifies, unless the bound of keys tried per kid is already taken by other usable keys."""
    try:
        document = json.loads(data[1:])
    except (ValueError, RecursionError):
        return
    if not isinstance(document, dict):
        return
    indexed = index(_jwks_keys(document))
    for kid in indexed:
        for alg in ("RS256", "ES256", "EdDSA", "PS512", "HS256"):
            if len(find(indexed, kid, alg)) > MAX_KEYS_PER_KID:
                raise AssertionError("more keys tried than the bound")
    try:
        uri = jwks_uri_of(document, _ISSUERS, "https://issuer.test/.well-known/openid-configuration")
    except FetchError:
        pass
    else:
        if not isinstance(uri, str) or document.get("issuer") not in _ISSUERS:
            raise AssertionError("a jwks_uri from a document of another issuer")
    neighbours = document.get("keys")
    if isinstance(neighbours, list) and len(neighbours) < MAX_JWKS_KEYS:
        at = data[0] % (len(neighbours) + 1) if data else 0
        ahead = sum(len(find(index(_jwks_keys({"keys": [junk]})), "fuzz-good", "ES256")) for junk in neighbours[:at])
        found = find(index(_jwks_keys({"keys": [*neighbours[:at], _GOOD_JWK, *neighbours[at:]]})), "fuzz-good", "ES256")
        if ahead < MAX_KEYS_PER_KID and not any(k.Algorithm.verify(_SIGNED, k.key, _GOOD_SIGNATURE) for k in found):
            raise AssertionError("a good key was hidden by its neighbours")


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "paths": paths,
    "bearer": bearer_header,
    "headers": headers,
    "tokens": tokens,
    "upstream_response": upstream_response,
    "jwks": jwks,
}
