"""The machine and the versions a result belongs to."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Final

from bench.targets import envoy_binary

__all__ = ["describe"]

_PACKAGES: Final = ("uvicorn", "uvloop", "httptools", "pyjwt", "cryptography", "prometheus-client")


def _output(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    return (done.stdout + done.stderr).strip()


def _cpu_model() -> str:
    for line in _output(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    with open("/proc/meminfo") as meminfo:
        kib = int(meminfo.readline().split()[1])
    return f"{kib / 2**20:.1f} GiB"


def describe() -> dict[str, str]:
    envoy = _output([envoy_binary(), "--version"]).split("version:")[-1].strip()
    info = {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "memory": _memory(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "envoy": envoy.split("/")[1] if "/" in envoy else envoy,
        "nginx": _output(["nginx", "-v"]).split("/")[-1],
        "wrk": _output(["wrk", "-v"]).split()[1],
        "curl": _output(["curl", "--version"]).split()[1],
    }
    for name in _PACKAGES:
        info[name] = metadata.version(name)
    return info
