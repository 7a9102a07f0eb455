"""`tls:` of a route or a provider: the CA bundle its HTTPS upstream is verified against, and the client certificate
it is called with (mutual TLS). Shapes here; the files are read and paired when the sidecar loads them
(sidecar/upstream/tls.py), so that `check` reports an unreadable file or a key that is not the certificate's too.

Each value is a file's absolute path, or the PEM text itself (`${file:/path}` brings a mounted Secret's content).
Host-name verification has no switch: it is always on (see README, "TLS to upstreams").
"""

from __future__ import annotations

import os
from typing import Annotated, Final

from pydantic import AfterValidator, model_validator

from sidecar.policy.fields import Spec, Text
from sidecar.policy.model import UpstreamTls
from sidecar.policy.yamlmarks import Document, Path, format_path

__all__ = ["TlsSpec", "build_tls"]

_PEM: Final = "-----BEGIN "


def _pem_or_path(value: str) -> str:
    """Never echoes the value: it may be a key."""
    if value.lstrip().startswith(_PEM) or os.path.isabs(value):
        return value
    raise ValueError("must be an absolute path to a PEM file, or PEM text (e.g. ${file:/etc/upstream-tls/tls.key})")


PemOrPath = Annotated[Text, AfterValidator(_pem_or_path)]


class TlsSpec(Spec):
    ca_file: PemOrPath | None = None  # trusted instead of the system's CAs for this upstream
    client_cert: PemOrPath | None = None
    client_key: PemOrPath | None = None

    @model_validator(mode="after")
    def _pair(self) -> TlsSpec:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together (mutual TLS needs both)")
        if self.ca_file is None and self.client_cert is None:
            raise ValueError("needs ca_file, or client_cert with client_key")
        return self


def build_tls(doc: Document, path: Path, spec: TlsSpec | None) -> UpstreamTls | None:
    if spec is None:
        return None
    where = f"{doc.source}:{doc.line(path)}: {format_path(path)}"
    return UpstreamTls(spec.ca_file, spec.client_cert, spec.client_key, where)
