"""A JWKS document -> the usable public signing keys, indexed by kid, each knowing which algorithms it fits.

RFC 8725 §3.1 and RFC 7517 §4: a key is used only for an algorithm its `kty` (and `crv`) can serve, that its own
`alg` names (when it names one), and only when its `use` / `key_ops` allow verifying signatures. Symmetric (`oct`)
keys, keys with private material, RSA keys under 2048 bits and keys pyjwt cannot load are dropped at fetch time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import jwt

__all__ = ["ASYMMETRIC_ALGORITHMS", "MAX_JWKS_KEYS", "JwksError", "Key", "KeyIndex", "find", "index", "parse_jwks"]

MAX_JWKS_KEYS: Final = 100

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

    def for_algorithm(self, alg: str) -> jwt.PyJWK | None:
        loaded = self._loaded.get(alg)
        if loaded is None and alg in self.algorithms:
            try:
                loaded = jwt.PyJWK(self._jwk, alg)
            except jwt.PyJWTError:
                return None
            self._loaded[alg] = loaded
        return loaded


KeyIndex = dict[str | None, tuple[Key, ...]]


def parse_jwks(document: Mapping[str, Any]) -> list[Key]:
    """The usable keys; raises JwksError when there are none, so a bad document never replaces working keys."""
    raw_keys = document.get("keys")
    if not isinstance(raw_keys, list):
        raise JwksError("JWKS: no `keys` list")
    if len(raw_keys) > MAX_JWKS_KEYS:
        raise JwksError(f"JWKS: {len(raw_keys)} keys, more than {MAX_JWKS_KEYS}")
    keys = [key for key in map(_parse_key, raw_keys) if key is not None]
    if not keys:
        raise JwksError("JWKS: no usable signing keys")
    return keys


def _parse_key(raw: object) -> Key | None:
    """A usable public signing key, or None (dropped): oct, encryption-only, private, unknown, short or broken keys."""
    if not isinstance(raw, dict) or "d" in raw:  # "d": private material has no business in a JWKS
        return None
    if raw.get("use", "sig") != "sig" or not isinstance(raw.get("kid", ""), str):
        return None
    ops = raw.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
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


def find(keys: KeyIndex, kid: str | None, alg: str) -> jwt.PyJWK | None:
    for key in keys.get(kid, ()):
        found = key.for_algorithm(alg)
        if found is not None:
            return found
    return None
