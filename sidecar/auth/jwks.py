"""A JWKS document -> the usable public signing keys, indexed by kid, each knowing which algorithms it fits.

RFC 8725 §3.1 and RFC 7517 §4: a key is used only for an algorithm its `kty` (and `crv`) can serve, that its own
`alg` names (when it names one), and only when its `use` / `key_ops` allow verifying signatures. Symmetric (`oct`)
keys, keys with private material, RSA keys under 2048 bits and keys pyjwt cannot load are dropped at fetch time.

One bad key never hides the good ones: an entry of an unexpected shape (a member of the wrong type, such as `crv`
as a list or `n` as a number) is dropped with a warning naming only its kid and the member, and the rest are used.
Several keys may share a kid (an issuer in the middle of a rotation): up to `MAX_KEYS_PER_KID` of those that fit the
token's algorithm are tried, so one token costs at most that many signature checks.
"""

from __future__ import annotations

import binascii
import logging
from collections.abc import Mapping
from typing import Any, Final

import jwt

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "MAX_JWKS_KEYS",
    "MAX_KEYS_PER_KID",
    "JwksError",
    "Key",
    "KeyIndex",
    "find",
    "index",
    "parse_jwks",
]

log = logging.getLogger(__name__)

MAX_JWKS_KEYS: Final = 100
MAX_KEYS_PER_KID: Final = 4  # keys tried for one token whose kid several keys share

# Members a verification key may have, and the one type each must be (RFC 7517 §4, RFC 7518 §6): anything else is
# a key we cannot read safely. Members not listed here (x5c, x5t, issuer, ...) are never read.
_STRING_MEMBERS: Final = ("kty", "kid", "use", "alg", "crv", "n", "e", "x", "y")
# What pyjwt raises for a JWK whose members have the right types but wrong contents (bad base64, a point off the
# curve, an exponent of zero): the key is dropped, never the fetch.
_LOAD_ERRORS: Final = (jwt.PyJWTError, ValueError, TypeError, KeyError, binascii.Error, OverflowError)

# Which key an algorithm needs: (kty, the curves that fit, or None when the curve does not decide).
# Only asymmetric algorithms: a symmetric (`oct`) key published in a JWKS is public, so it proves nothing.
_ALGORITHM_KEYS: Final[Mapping[str, tuple[str, frozenset[str] | None]]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "ES256K": ("EC", frozenset({"secp256k1"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
ASYMMETRIC_ALGORITHMS: Final = frozenset(_ALGORITHM_KEYS)


class JwksError(Exception):
    """The document is not a usable JWKS; the message names the problem, never key material."""


class Key:
    """One published verification key, and the PyJWK per algorithm built from it on first use.

    A PyJWK is bound to one algorithm (pyjwt refuses a token whose alg differs), and an RSA key without `alg`
    serves RS256 and PS256 alike, so the PyJWK is built per (key, alg) and kept."""

    __slots__ = ("_jwk", "_loaded", "algorithms", "kid")

    def __init__(self, jwk: dict[str, Any], algorithms: frozenset[str]) -> None:
        self._jwk = jwk
        self._loaded: dict[str, jwt.PyJWK] = {}
        self.algorithms = algorithms
        self.kid: str | None = jwk.get("kid")

    @property
    def identity(self) -> tuple[object, ...]:
        """What makes this key this key: its kid, algorithms and public material (compared across fetches)."""
        jwk = self._jwk
        return (self.kid, self.algorithms, *(jwk.get(name) for name in ("kty", "crv", "n", "e", "x", "y")))

    def for_algorithm(self, alg: str) -> jwt.PyJWK | None:
        loaded = self._loaded.get(alg)
        if loaded is None and alg in self.algorithms:
            try:
                loaded = jwt.PyJWK(self._jwk, alg)
            except _LOAD_ERRORS:
                return None
            self._loaded[alg] = loaded
        return loaded


KeyIndex = dict[str | None, tuple[Key, ...]]


def parse_jwks(document: Mapping[str, Any], source: str = "") -> list[Key]:
    """The usable keys; raises JwksError when there are none, so a bad document never replaces working keys.
    `source` (the provider) names where a dropped key came from in the log line."""
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise JwksError("JWKS: no `keys` list")
    if len(raw_keys) > MAX_JWKS_KEYS:
        raise JwksError(f"JWKS: {len(raw_keys)} keys, more than {MAX_JWKS_KEYS}")
    keys = []
    for position, raw in enumerate(raw_keys):
        problem = _shape_problem(raw)
        if problem is not None:
            kid = raw.get("kid") if isinstance(raw, dict) else None
            fields = {"provider": source, "index": position, "kid": kid[:64] if isinstance(kid, str) else None}
            log.warning("JWKS key dropped", extra={"fields": {**fields, "problem": problem}})
            continue
        key = _parse_key(raw)
        if key is not None:
            keys.append(key)
    if not keys:
        raise JwksError("JWKS: no usable signing keys")
    return keys


def _shape_problem(raw: object) -> str | None:
    """Why an entry is not a JWK of the shape RFC 7517 gives (a fixed text naming the member, never its value)."""
    if not isinstance(raw, dict):
        return "not a JSON object"
    for name in _STRING_MEMBERS:
        if name in raw and not isinstance(raw[name], str):
            return f"`{name}` is not a string"
    ops = raw.get("key_ops")
    if ops is not None and not (isinstance(ops, list) and all(isinstance(op, str) for op in ops)):
        return "`key_ops` is not a list of strings"
    return None


def _parse_key(raw: dict[str, Any]) -> Key | None:
    """A usable public signing key, or None (dropped): oct, encryption-only, private, unknown, short or broken keys.
    `raw` has the shape `_shape_problem` checks."""
    if "d" in raw:  # "d": private material has no business in a JWKS
        return None
    if raw.get("use", "sig") != "sig":
        return None
    ops = raw.get("key_ops")
    if ops is not None and "verify" not in ops:
        return None
    algorithms = _fitting_algorithms(raw)
    if not algorithms:
        return None
    key = Key(raw, algorithms)
    # Load once now so a key pyjwt cannot read is dropped at fetch, not discovered per request; and refuse keys
    # too short to trust (RSA under 2048 bits), which pyjwt would otherwise only warn about on every decode.
    loaded = key.for_algorithm(min(algorithms))
    if loaded is None or loaded.Algorithm.check_key_length(loaded.key) is not None:
        return None
    return key


def _fitting_algorithms(raw: dict[str, Any]) -> frozenset[str]:
    kty, crv, declared = raw.get("kty"), raw.get("crv"), raw.get("alg")
    return frozenset(
        alg
        for alg, (need_kty, curves) in _ALGORITHM_KEYS.items()
        if kty == need_kty and (curves is None or crv in curves) and (declared is None or declared == alg)
    )


def index(keys: list[Key]) -> KeyIndex:
    by_kid: dict[str | None, list[Key]] = {}
    for key in keys:
        kid = key.kid
        if kid is not None:
            by_kid.setdefault(kid, []).append(key)
    indexed: KeyIndex = {kid: tuple(group) for kid, group in by_kid.items()}
    if len(keys) == 1:
        indexed[None] = (keys[0],)  # a token without kid may use the only key, never pick among several
    return indexed


def find(keys: KeyIndex, kid: str | None, alg: str) -> tuple[jwt.PyJWK, ...]:
    """The keys under `kid` that fit `alg`, in the issuer's order, at most MAX_KEYS_PER_KID."""
    found = []
    for key in keys.get(kid, ()):
        loaded = key.for_algorithm(alg)
        if loaded is not None:
            found.append(loaded)
            if len(found) == MAX_KEYS_PER_KID:
                break
    return tuple(found)
