"""Writes the seed corpus, fuzz/corpus/TARGET/NAME: `python -m fuzz.seeds`. The seeds are committed; this is how
they were made (and how to add one: a row here, then run it).

Seeds start libFuzzer near the interesting code: the confusing paths of the integration table, header blocks with
every trick of issue 4, and token forms the verifier must refuse or accept (see fuzz.targets.tokens for the modes).
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
SEEDS: Final = {"paths": PATHS, "bearer": BEARER, "headers": HEADERS, "tokens": TOKENS}


def main() -> None:
    for target, seeds in SEEDS.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)  # libFuzzer's own naming


if __name__ == "__main__":
    main()
