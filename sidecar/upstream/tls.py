"""Client TLS for calls the sidecar makes: the system's CAs by default, or a route's or provider's own `tls:` (a CA
bundle trusted instead, a client certificate for mutual TLS). Always TLS 1.2 or later, the certificate chain and the
host name verified, X.509-strict on every Python (as 3.13 is by default: what a private CA must be does not depend
on the image's Python version).

Host-name verification cannot be turned off, not even for loopback: an upstream on 127.0.0.1 is reached with a
certificate naming 127.0.0.1 (an IP SAN), which every private CA can issue.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import tempfile
from dataclasses import dataclass
from typing import Final

from sidecar.policy.model import UpstreamTls

__all__ = ["UpstreamTlsError", "Verified", "client_context", "default_context"]

_PEM: Final = "-----BEGIN "


class UpstreamTlsError(Exception):
    """The `tls:` files cannot be used; the message names the setting and OpenSSL's reason (never file content)."""


@dataclass(frozen=True, slots=True)
class Verified:
    """A built client context and a digest of what it was built from (the same digest: the same trust and key)."""

    context: ssl.SSLContext
    digest: str


def default_context() -> ssl.SSLContext:
    """The system's CAs (SSL_CERT_FILE / SSL_CERT_DIR honoured), host name checked, X.509-strict."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def client_context(tls: UpstreamTls) -> Verified:
    """The context for an upstream with its own `tls:`; UpstreamTlsError when a file is unreadable, not PEM, or the
    key is not the certificate's."""
    digest = hashlib.sha256()
    context = default_context()
    if tls.ca_file is not None:
        data = _read(tls.ca_file, "ca_file")
        digest.update(data)
        try:
            context = ssl.create_default_context(cadata=_text(data, "ca_file"))  # instead of the system's CAs
        except ssl.SSLError as exc:
            why = f" ({exc.reason})" if exc.reason else ""
            raise UpstreamTlsError(f"ca_file: no usable certificate in it{why}") from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    if tls.client_cert is not None and tls.client_key is not None:
        cert, key = _read(tls.client_cert, "client_cert"), _read(tls.client_key, "client_key")
        digest.update(cert)
        digest.update(key)
        _load_pair(context, cert, key)
    return Verified(context, digest.hexdigest())


def _read(value: str, name: str) -> bytes:
    if value.lstrip().startswith(_PEM):
        return value.encode()
    try:
        with open(value, "rb") as file:
            return file.read()
    except OSError as exc:
        raise UpstreamTlsError(f"{name}: cannot read {value}: {exc.strerror or type(exc).__name__}") from None


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise UpstreamTlsError(f"{name}: not PEM text") from None


def _load_pair(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """`load_cert_chain` reads files only: the pair goes through a private temporary directory (mode 0700), removed
    at once, whether it came from a path or from `${file:...}` text."""
    with tempfile.TemporaryDirectory(prefix="sidecar-tls-") as directory:
        cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        for path, data in ((cert_path, cert), (key_path, key)):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
        try:
            context.load_cert_chain(cert_path, key_path, password=_encrypted)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise UpstreamTlsError("client_key is not client_cert's key (KEY_VALUES_MISMATCH)") from None
            raise UpstreamTlsError(f"client_cert/client_key: not usable PEM ({exc.reason or 'SSLError'})") from None


def _encrypted() -> str:
    raise UpstreamTlsError("client_key is encrypted: give the sidecar an unencrypted key (in a Secret)")
