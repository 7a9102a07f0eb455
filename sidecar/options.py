"""Command-line options resolved once: flags, then SIDECAR_* environment variables, then defaults."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["Address", "ServeOptions", "parse_address"]

DEFAULT_LISTEN: Final = "0.0.0.0:8080"
DEFAULT_ADMIN_LISTEN: Final = "0.0.0.0:9901"


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(value: str) -> Address:
    """`HOST:PORT`, `[IPv6]:PORT` or `:PORT` (all interfaces). Raises ValueError with a readable message."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (port 0-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        ipaddress.IPv6Address(host)  # raises ValueError for junk
    return Address(host or "0.0.0.0", int(port_text))


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config: str
    listen: Address
    admin_listen: Address
    log_level: str = "info"

    @classmethod
    def resolve(
        cls,
        config: str | None,
        listen: str | None,
        admin_listen: str | None,
        log_level: str,
        environ: Mapping[str, str],
    ) -> ServeOptions:
        path = config or environ.get("SIDECAR_CONFIG")
        if not path:
            raise ValueError("no policy file: pass --config FILE or set SIDECAR_CONFIG")
        return cls(
            config=path,
            listen=parse_address(listen or environ.get("SIDECAR_LISTEN") or DEFAULT_LISTEN),
            admin_listen=parse_address(admin_listen or environ.get("SIDECAR_ADMIN_LISTEN") or DEFAULT_ADMIN_LISTEN),
            log_level=log_level,
        )
