"""The demo token issuer on a loopback thread of the harness, and the tokens the bench sends (valid, forged, flood)."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from typing import Any, Final

import uvicorn

from sidecar.demo.cast import demo_clients
from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer

__all__ = ["AUDIENCE", "BenchIssuer"]

AUDIENCE: Final = "api://bench"
_LIFETIME: Final = 4 * 3600  # longer than any bench run, so no token expires mid-run


class BenchIssuer:
    """DemoIssuer served by uvicorn on 127.0.0.1 (a thread of this process): JWKS fetches are counted here."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.demo = DemoIssuer(self.url, demo_clients(), token_lifetime=_LIFETIME)
        config = uvicorn.Config(
            self.demo.app(), http="httptools", ws="none", lifespan="off", log_config=None, access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)
        self._thread.start()

    @property
    def issuer(self) -> str:
        return self.demo.issuer_url(CONTOSO_TENANT)

    @property
    def jwks_url(self) -> str:
        return self.demo.jwks_url(CONTOSO_TENANT)

    @property
    def jwks_requests(self) -> int:
        return self.demo.jwks_requests

    def valid_token(self) -> str:
        """What a client-credentials call would return for an app of the tenant, minted directly."""
        claims = {"aud": AUDIENCE, "sub": _OID, "oid": _OID, "azp": "bench", "appid": "bench", "idtyp": "app"}
        return self.demo.mint(CONTOSO_TENANT, claims)

    def bad_signature_token(self) -> str:
        """The valid token with one byte of its signature changed: well-formed, right kid, wrong signature."""
        head, payload, signature = self.valid_token().split(".")
        raw = bytearray(_b64decode(signature))
        raw[len(raw) // 2] ^= 0x01
        return f"{head}.{payload}.{_b64encode(bytes(raw))}"

    def unknown_kid_token(self) -> str:
        """A token naming a random kid the issuer never published (its signature is random too: never reached)."""
        header = {"alg": "RS256", "typ": "JWT", "kid": os.urandom(16).hex()}
        now = int(time.time())
        payload: dict[str, Any] = {"iss": self.issuer, "aud": AUDIENCE, "sub": _OID, "iat": now, "exp": now + 3600}
        parts = [_b64encode(json.dumps(part).encode()) for part in (header, payload)]
        return ".".join([*parts, _b64encode(os.urandom(256))])

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


_OID: Final = "bbbbbbbb-0000-0000-0000-000000000001"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
