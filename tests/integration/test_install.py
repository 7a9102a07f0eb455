"""Installable as a tool: `pipx install .` gives a working `sidecar` with the runtime dependencies only."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sidecar

ROOT = Path(__file__).resolve().parents[2]
TEST_ONLY = ("pytest", "hypothesis", "httpbin", "mypy", "ruff", "trustme", "pipx")


def test_pipx_install_gives_a_working_sidecar_with_runtime_dependencies_only(tmp_path: Path) -> None:
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    env.pop("VIRTUAL_ENV", None)
    pip_args = f"--constraint {ROOT / 'constraints.txt'}"
    install = [sys.executable, "-m", "pipx", "install", "--python", sys.executable, "--pip-args", pip_args, str(ROOT)]
    subprocess.run(install, env=env, check=True, capture_output=True, timeout=300)
    tool = tmp_path / "bin" / "sidecar"

    version = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True, timeout=30)
    assert version.stdout.strip() == f"sidecar {sidecar.__version__}"
    demo_policy = tmp_path / "pipx" / "venvs" / "auth-sidecar"
    found = list(demo_policy.glob("lib/python*/site-packages/sidecar/demo/demo.yaml"))
    assert len(found) == 1  # the package data came along
    demo_env = {**env, "DEMO_ISSUER": "http://127.0.0.1:9", "DEMO_UPSTREAM": "http://127.0.0.1:9"}
    check = subprocess.run([tool, "check", "--config", found[0]], env=demo_env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    python = demo_policy / "bin" / "python"
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert "auth-sidecar" in installed and not installed & set(TEST_ONLY)
