"""The fixed parts every measurement shares: the run directory, the issuer, nginx and the echo upstream."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.issuer import BenchIssuer
from bench.procs import Proc
from bench.targets import BENCH_DIR, Ports, start_echo, start_nginx

__all__ = ["Lab", "lab"]


@dataclass(frozen=True)
class Lab:
    run: Path  # scratch: configs, process output, raw results, profiles
    issuer: BenchIssuer
    nginx: Proc
    echo: Proc
    ports: Ports


@contextlib.contextmanager
def lab(run: Path = BENCH_DIR / "run") -> Iterator[Lab]:
    """Start the shared parts on loopback; stop each by its PID on the way out, whatever happened."""
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    with contextlib.ExitStack() as stack:
        issuer = BenchIssuer()
        stack.callback(issuer.stop)
        nginx, nginx_port = start_nginx(run)
        stack.callback(nginx.stop)
        echo, echo_port = start_echo(run)
        stack.callback(echo.stop)
        ports = Ports(issuer.url, issuer.issuer, issuer.jwks_url, nginx_port, echo_port)
        yield Lab(run, issuer, nginx, echo, ports)
