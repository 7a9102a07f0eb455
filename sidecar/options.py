"""Command-line options resolved once: flags, then SIDECAR_* environment variables, then defaults."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["FORWARD_AUTH_INGRESSES", "Address", "ListenerTlsFiles", "ServeOptions", "parse_address"]

DEFAULT_LISTEN: Final = "0.0.0.0:8080"
DEFAULT_ADMIN_LISTEN: Final = "0.0.0.0:9901"
# Open connections per worker on the proxy listener. nginx's stock nginx.conf: worker_connections 1024. An idle one
# costs ~10 KB (measured), a full 64 KiB head in progress more: 1024 stay well under the chart's 256 MiB per worker.
DEFAULT_MAX_CONNECTIONS: Final = 1024
# The ingresses forward-auth answers; each puts the original request in its own place (sidecar/edge/forward_auth.py).
FORWARD_AUTH_INGRESSES: Final = ("ingress-nginx", "nginx", "traefik", "caddy", "envoy")


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
    log_format: str = "json"
    drain_delay: float = 5.0
    grace: float = 25.0
    workers: int = 1
    audit: bool = False
    forward_auth_path: str | None = None
    forward_auth_ingress: str | None = None
    reload_interval: float = 2.0
    reload_settle: float = 5.0  # a file changed in place is loaded once unchanged this long (sidecar.ops.reload)
    tls: ListenerTlsFiles | None = None  # None: the proxy listener speaks plain HTTP
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # per worker, on the proxy listener (sidecar/edge/conncap.py)

    @classmethod
    def resolve(cls, flags: Mapping[str, Any], environ: Mapping[str, str]) -> ServeOptions:
        """`flags` are argparse's values (None when not given); each falls back to its SIDECAR_* variable."""

        def pick(name: str, default: Any = None) -> Any:
            given = flags.get(name)
            return given if given is not None else environ.get("SIDECAR_" + name.upper(), default)

        path = pick("config")
        if not path:
            raise ValueError("no policy file: pass --config FILE or set SIDECAR_CONFIG")
        options = cls(
            config=path,
            listen=parse_address(pick("listen", DEFAULT_LISTEN)),
            admin_listen=parse_address(pick("admin_listen", DEFAULT_ADMIN_LISTEN)),
            log_level=pick("log_level", "info"),
            log_format=pick("log_format", "json"),
            drain_delay=_seconds("drain-delay", pick("drain_delay", 5.0)),
            grace=_seconds("grace", pick("grace", 25.0)),
            workers=_count("workers", pick("workers", 1)),
            audit=bool(flags.get("audit")) or environ.get("SIDECAR_AUDIT", "").lower() in ("1", "true", "yes"),
            forward_auth_path=pick("forward_auth_path"),
            forward_auth_ingress=pick("forward_auth_ingress"),
            reload_interval=_seconds("reload-interval", pick("reload_interval", 2.0)),
            reload_settle=_seconds("reload-settle", pick("reload_settle", 5.0)),
            tls=_tls_files(pick("tls_cert"), pick("tls_key"), pick("tls_client_ca")),
            max_connections=_count("max-connections", pick("max_connections", DEFAULT_MAX_CONNECTIONS), 1_000_000),
        )
        _check_forward_auth(options.forward_auth_path, options.forward_auth_ingress)
        return options


@dataclass(frozen=True, slots=True)
class ListenerTlsFiles:
    """`--tls-cert`, `--tls-key` and `--tls-client-ca`: PEM files, watched and reloaded while serving."""

    cert: str  # the certificate chain, leaf first
    key: str  # its private key (never read into a message)
    client_ca: str | None = None  # set: every caller must present a certificate issued by these CAs


def _tls_files(cert: str | None, key: str | None, client_ca: str | None) -> ListenerTlsFiles | None:
    """Both the certificate and the key, or neither; a client CA only with them."""
    if cert and key:
        return ListenerTlsFiles(cert, key, client_ca or None)
    if cert:
        raise ValueError("--tls-cert needs --tls-key (env SIDECAR_TLS_KEY)")
    if key:
        raise ValueError("--tls-key needs --tls-cert (env SIDECAR_TLS_CERT)")
    if client_ca:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (env SIDECAR_TLS_CERT, SIDECAR_TLS_KEY)")
    return None


def _check_forward_auth(path: str | None, ingress: str | None) -> None:
    """Both or neither: which headers are believed depends on the ingress, and guessing it is what let a client's
    own X-Original-URL decide."""
    names = "|".join(FORWARD_AUTH_INGRESSES)
    if path is not None and not path.startswith("/"):
        raise ValueError(f"--forward-auth-path {path!r} must start with /")
    if path is not None and ingress is None:
        raise ValueError(f"--forward-auth-path needs --forward-auth-ingress {names} (env SIDECAR_FORWARD_AUTH_INGRESS)")
    if ingress is not None and ingress not in FORWARD_AUTH_INGRESSES:
        raise ValueError(f"--forward-auth-ingress {ingress!r} is not one of {names}")
    if ingress is not None and path is None:
        raise ValueError("--forward-auth-ingress needs --forward-auth-path (env SIDECAR_FORWARD_AUTH_PATH)")


def _seconds(name: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"--{name} {value!r} is not a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"--{name} {value!r} must be between 0 and 3600 seconds")
    return seconds


def _count(name: str, value: Any, most: int = 64) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"--{name} {value!r} is not a whole number") from None
    if not 1 <= count <= most:
        raise ValueError(f"--{name} {value!r} must be between 1 and {most}")
    return count
