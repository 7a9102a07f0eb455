"""What the sidecar sends upstream for a client's headers (sidecar.upstream.target.request_headers), as text pairs."""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.policy.model import Identity, IdentityHeaders
from sidecar.upstream.target import request_headers

__all__ = ["sent_upstream"]


def sent_upstream(
    client: Iterable[tuple[str, str]],
    identity: Identity | None = None,
    forward_token: bool = False,
    *,
    client_ip: str = "10.0.0.9",
    scheme: str = "https",
) -> list[tuple[str, str]]:
    """Every header sent upstream, in order: a list, so a client's copy next to the sidecar's own is seen. The
    client's names arrive lower-cased, as from the listener; the request id is "rid-1"."""
    out = request_headers(
        [(name.lower().encode(), value.encode()) for name, value in client],
        forward_token=forward_token,
        names=IdentityHeaders(),
        identity=identity,
        client_ip=client_ip,
        scheme=scheme,
        request_id="rid-1",
    )
    return [(name.decode(), value.decode()) for name, value in out]
