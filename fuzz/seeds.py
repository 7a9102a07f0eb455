"""Writes the seed corpus, fuzz/corpus/TARGET/NAME: `python -m fuzz.seeds`. The seeds are committed; this is how
they were made (and how to add one: a row here, then run it).

Seeds start libFuzzer near the interesting code: the confusing paths of the integration table, header blocks with
every trick of issue 4, token forms the verifier must refuse or accept (see fuzz.targets.tokens for the modes), and
upstream responses of every framing (see fuzz.targets.split_response_input for the flags byte and the pieces).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, Final

CORPUS: Final = Path(__file__).resolve().parent / "corpus"
NOW: Final = 1_700_000_000  # tests.support.conformance.NOW: the verifier's clock in the fuzz world
TID: Final = "11111111-2222-3333-4444-555555555555"
CONTOSO: Final = f"http://127.0.0.1:9400/{TID}/v2.0"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _parts(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"sig") -> bytes:
    return _json(header) + b"\x00" + _json(payload) + b"\x00" + signature


_TIMES: Final = {"iat": NOW, "nbf": NOW, "exp": NOW + 300}
_ENTRA: Final = {"iss": CONTOSO, "aud": "6f1c2a9e-0d4b-4c1e-9a57-3b2f8e7d1c40", "tid": TID, "ver": "2.0", **_TIMES}
_ENTRA_USER: Final = {**_ENTRA, "oid": "aaaaaaaa-0000-0000-0000-00000000000a", "scp": "User.Read", "azp": "client-1"}
_PARTNER: Final = {"iss": "https://partner.test", "aud": "api://partner", "sub": "s", **_TIMES}

PATHS: Final = [
    b"/public/../admin", b"/public/%2e%2e/admin", b"/public/.%2E/admin", b"//admin", b"/a;b", b"/A", b"/x/",
    b"/a%00", b"/%c0%af", b"/%c0%ae%c0%ae/x", b"/a%2fb", b"/a%5Cb", b"/a\\b", b"/public/..;/admin",
    b"/public/%252e%252e/admin", b"/%7euser/%41", b"/caf%C3%A9", b"/a/./b/../c//d", b"*", b"/a\tb", b"/a?b#c",
    b"/%ed%a0%80", b"/%zz", b"/a%2", b"/" + b"a" * 8191,
]  # fmt: skip
BEARER: Final = [
    b"authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
    b"authorization: bearer   abc~+/==",
    b"authorization: Basic dXNlcjpwYXNz",
    b"authorization: Bearer a\nauthorization: Bearer b",
    b"authorization: Bearer\nhost: x",
    b"authorization: Bearer a b",
    b"authorization:\t Bearer \t=abc",
]
HEADERS: Final = [
    b"F" + b"\n".join([b"host: a", b"connection: x-auth-user, x-forwarded-for, authorization", b"x-auth_user: evil"]),
    b"T" + b"\n".join([b"authorization: Bearer t", b"connection: authorization, content-length", b"content-length: 3"]),
    b"F" + b"\n".join([b"content-length: 5", b"transfer-encoding: chunked", b"content_length: 9", b"te: trailers"]),
    b"T" + b"\n".join([b"x-http-method-override: DELETE", b"X-Original-URL: /admin", b"x-forwarded-for: 1.2.3.4"]),
    b"F" + b"\n".join([b"host: a", b"host: b", b"x-forwarded-for: 10.0.0.1", b"x-forwarded-for: 10.0.0.2"]),
    b"F" + b"\n".join([b"connection: keep-alive, upgrade", b"upgrade: websocket", b"X_AUTH_SUBJECT: x"]),
    b"F" + b"\n".join([b"x-forwarded-for: 1.2.3.4, 10.0.0.2", b"x-forwarded-for: [2001:db8::1]:443, ::ffff:10.1.1.1"]),
    b"T" + b"\n".join([b"x-forwarded-for: 203.0.113.9:8080,unknown, 10.9.9.9", b"forwarded: for=1.2.3.4"]),
]
TOKENS: Final = [
    b"p" + _json(_PARTNER),
    b"p" + _json({**_PARTNER, "exp": "1700000300", "aud": ["api://partner", 3], "nbf": 1e308}),
    b"e" + _json(_ENTRA_USER),
    b"e" + _json({**_ENTRA, "roles": ["Payroll.Invoke"], "azp": "client-1", "idtyp": "app", "oid": "o"}),
    b"e" + _json({**_ENTRA, "iss": f"https://sts.windows.net/{TID}/", "ver": "1.0", "tid": "other"}),
    b"h" + _json({"alg": "ES256", "kid": "partner-1", "typ": "at+jwt", "crit": ["exp"]}) + b"\x00" + _json(_PARTNER),
    b"h" + _json({"alg": "ES256", "typ": "application/at+JWT"}) + b"\x00" + _json(_PARTNER),
    b"i" + _json({"active": True, "sub": "s", "exp": NOW + 60, "aud": "x", "scope": "a b", "client_id": "c"}),
    b"i" + _json({"active": "true"}),
    b"i" + b"not json",
    b"t" + _b64(_json({"alg": "none"})) + b"." + _b64(_json(_ENTRA_USER)) + b".",
    b"t" + b"opaque-token-value",
    b"t" + b"a.b.c",
    _parts({"alg": "RS256", "kid": "entra-1", "typ": "JWT"}, _ENTRA_USER),
    _parts({"alg": "HS256", "kid": "entra-1"}, _ENTRA_USER),
    _parts({"alg": "RS256", "jku": "https://evil.test/jwks"}, _ENTRA_USER),
    _parts({"alg": "ES256", "kid": "partner-1", "typ": "at+jwt"}, _PARTNER, b""),
]


def _upstream(stream: bytes, head: bool = False, close: bool = False, cuts: tuple[int, ...] = ()) -> bytes:
    """An upstream_response input: the flags byte, the response, then the lengths of the pieces it is fed in."""
    return bytes([head | close << 1 | len(cuts) << 2]) + stream + bytes(cuts)


_OK: Final = b"HTTP/1.1 200 OK\r\n"
_CHUNKED: Final = (
    _OK + b"transfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
    b'5;name=value\r\nhello\r\n6;q="a \\"b";x\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n'
)
_NEAR_THE_LIMITS: Final = _OK + b"".join(b"x-%03d: %b\r\n" % (i, b"v" * 240) for i in range(255)) + b"\r\n"
RESPONSES: Final = [
    _upstream(_OK + b"content-type: text/plain\r\ncontent-length: 5\r\n\r\nhello", cuts=(3, 14, 30)),
    _upstream(_OK + b"Content-Length: 0\r\nConnection: close\r\n\r\n"),
    _upstream(_CHUNKED, cuts=(20, 40, 1, 1, 7)),
    _upstream(_OK + b"Transfer-Encoding: gzip, chunked\r\n\r\n3\r\n\x1f\x8b\x08\r\n0\r\n\r\n"),
    _upstream(_OK + b"content-type: text/plain\r\n\r\nuntil the close", close=True, cuts=(25, 2)),
    _upstream(b"HTTP/1.0 200 OK\r\nserver: old\r\n\r\nuntil the close", close=True),
    _upstream(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok", cuts=(12,)),
    _upstream(b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n" + _CHUNKED),
    _upstream(b"HTTP/1.1 204 No Content\r\nx-a: b\r\n\r\n"),
    _upstream(b'HTTP/1.1 304 Not Modified\r\netag: "x"\r\ncontent-length: 10\r\n\r\n'),
    _upstream(_OK + b"content-length: 1000\r\n\r\n", head=True),
    _upstream(_OK + b"transfer-encoding: chunked\r\n\r\n", head=True, close=True),
    _upstream(_OK + b"content-length: 2\r\n\r\nok" + _OK + b"content-length: 3\r\n\r\nbad"),
    _upstream(_OK + b"content-length: 9\r\n\r\ncut", close=True),
    _upstream(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"),
    _upstream(_OK + b"".join(b"a%d: b\r\n" % i for i in range(255)) + b"content-length: 0\r\n\r\n"),
    _upstream(_NEAR_THE_LIMITS, close=True),
]
# jwks inputs: the first byte places the target's own good key among the document's keys, the rest is JSON.
_RSA_N: Final = "sXch-UNLjdkxAAm7L4WNYUxRd3BIB0j3aLzfmL3T_AI3ktLqWMIj7Khe0U1Ti0fzqF4eQAKNFqdj_pRz" + "Aq" * 120
_JWKS_DOCS: Final[list[dict[str, Any]]] = [
    {"keys": [{"kty": "RSA", "use": "sig", "kid": "entra-1", "n": _RSA_N, "e": "AQAB", "x5t": "a", "x5c": ["MIIC"]}]},
    {"keys": [{"kty": "EC", "crv": ["P-256"], "kid": "k", "x": "AA", "y": "AA"}, {"kty": "EC", "crv": {"a": 1}}]},
    {"keys": [{"kty": "RSA", "n": 12345, "e": "AQAB"}, {"kty": ["RSA"]}, {"kid": 7}, "x", None, [1]]},
    {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "a"}]},
    {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "fuzz-good"}, {"kty": "EC", "crv": "P-256", "d": "AA"}]},
    {"keys": [{"kty": "RSA", "kid": "fuzz-good", "use": "enc", "key_ops": ["verify", 1], "alg": {"x": 1}}]},
    {"issuer": "https://issuer.test", "jwks_uri": "https://issuer.test/keys"},
    {"issuer": ["https://issuer.test"], "jwks_uri": {"u": 1}},
    {"issuer": {"a": []}, "keys": "nope"},
]
JWKS: Final = [bytes([i]) + _json(doc) for i, doc in enumerate(_JWKS_DOCS)]
SEEDS: Final = {
    "paths": PATHS,
    "bearer": BEARER,
    "headers": HEADERS,
    "tokens": TOKENS,
    "upstream_response": RESPONSES,
    "jwks": JWKS,
}


def main() -> None:
    for target, seeds in SEEDS.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)  # libFuzzer's own naming


if __name__ == "__main__":
    main()
