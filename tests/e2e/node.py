"""The suite's Node.js side: find node and npm, install the locked packages, run the Postman collection in newman."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = ["E2E", "NodeTools", "NewmanRun", "node_tools"]

E2E = Path(__file__).parent
LOCK = E2E / "package-lock.json"
# npm writes this "hidden lockfile" on every install: older than the lock means node_modules is stale.
INSTALLED = E2E / "node_modules" / ".package-lock.json"
NPM_CI_TIMEOUT = 300.0
MIN_NODE = (20, 19)  # oidc-provider 9 uses URL.parse and crypto.hash


@dataclass(frozen=True)
class NodeTools:
    node: str
    npm: str

    def install(self) -> None:
        """`npm ci` from the lock file when node_modules is missing or older than the lock (else nothing)."""
        if INSTALLED.exists() and INSTALLED.stat().st_mtime >= LOCK.stat().st_mtime:
            return
        command = [self.npm, "ci", "--prefer-offline", "--no-audit", "--no-fund"]
        done = subprocess.run(command, cwd=E2E, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT, check=False)
        if done.returncode != 0:
            pytest.fail(f"`npm ci` in {E2E} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")

    def newman(self, collection: Path, environment: Path, report: Path, timeout: float) -> NewmanRun:
        """Runs the collection with newman's own CLI (bounded), and reads its JSON report."""
        command = [self.node, str(E2E / "node_modules" / "newman" / "bin" / "newman.js"), "run", str(collection)]
        command += ["--environment", str(environment), "--reporters", "cli,json"]
        command += ["--reporter-json-export", str(report), "--color", "off", "--timeout-request", "10000"]
        done = subprocess.run(command, cwd=E2E, capture_output=True, text=True, timeout=timeout, check=False)
        summary = json.loads(report.read_text()) if report.exists() else {}
        return NewmanRun(done.returncode, done.stdout + done.stderr, summary.get("run", {}))


@dataclass(frozen=True)
class NewmanRun:
    returncode: int
    output: str  # newman's CLI report: request lines, assertion names, a summary table (no bodies, no tokens)
    run: dict[str, Any]  # the JSON report's "run": stats and failures

    def stat(self, name: str, kind: str = "total") -> int:
        return int(self.run.get("stats", {}).get(name, {}).get(kind, -1))

    def failures(self) -> list[str]:
        return [f"{f['source']['name']}: {f['error']['message']}" for f in self.run.get("failures", [])]


def node_tools() -> NodeTools:
    """node and npm from PATH. Missing or too old: a failure under CI=true (the suite must run there), else a skip."""
    node, npm = shutil.which("node"), shutil.which("npm")
    version = _version(node) if node is not None else None
    if node is not None and npm is not None and version is not None and version >= MIN_NODE:
        return NodeTools(node, npm)
    wanted = ".".join(map(str, MIN_NODE))
    message = f"the e2e suite needs Node.js >= {wanted} and npm on PATH; found node={node} {version}, npm={npm}"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message + " (under CI=true this fails)")


def _version(node: str) -> tuple[int, ...] | None:
    done = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False)
    try:
        return tuple(int(part) for part in done.stdout.strip().lstrip("v").split(".")[:2])
    except ValueError:
        return None
