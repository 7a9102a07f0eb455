"""The policy package is pure: importing it pulls in no web stack, HTTP client or metrics library."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("starlette", "uvicorn", "httpx", "aiohttp", "prometheus_client")
MODULES = (
    "sidecar.policy",
    "sidecar.policy.model",
    "sidecar.policy.load",
    "sidecar.policy.routes",
    "sidecar.policy.allow",
    "sidecar.policy.schema",
    "sidecar.policy.checks",
    "sidecar.policy.yamlmarks",
    "sidecar.policy.substitute",
)

# A fresh interpreter: this test process has long since imported the web stack through other tests.
PROBE = f"""
import importlib, sys
for name in {MODULES!r}:
    importlib.import_module(name)
loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
print(",".join(loaded))
"""


def test_policy_imports_no_web_stack() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_probe_would_notice() -> None:
    """Guard against a probe that can never fail."""
    probe = PROBE.replace("for name in", "import httpx\nfor name in")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "httpx"
