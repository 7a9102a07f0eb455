"""Installable as a tool: `pipx install .` gives a working `sidecar` with the runtime dependencies only; and
`make demo` on a fresh clone builds a virtualenv with those alone (no test tool)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

import sidecar
from tests.support.dependencies import runtime_requirements, tools_for_tests

ROOT = Path(__file__).resolve().parents[2]


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

    installed = _installed(demo_policy / "bin" / "python")
    assert "auth-sidecar" in installed and not installed & tools_for_tests()


def _installed(python: Path) -> set[str]:
    """The distributions installed in the virtualenv of `python`, by canonical name."""
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    return {canonicalize_name(line.split("==")[0]) for line in listed.stdout.splitlines()}


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS")}
    return subprocess.run(["make", "-s", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_make_demo_builds_its_virtualenv_with_the_runtime_dependencies_only(tmp_path: Path) -> None:
    """A fresh clone's `make demo` installs the product's dependencies from the lock and no test tool (pytest, mypy,
    helm, ...), and stamps the virtualenv so that the next `make demo` installs nothing."""
    venv = tmp_path / "venv"
    plan = _make("-n", "demo", f"VENV={venv}").stdout.splitlines()
    assert len(plan) == 2, plan
    assert re.fullmatch(rf"tools/venv \S+ {re.escape(str(venv))} runtime", plan[0]), plan
    assert plan[1] == f"{venv}/bin/sidecar demo"

    first = _make("venv-runtime", f"VENV={venv}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "installing the runtime dependencies" in first.stdout
    installed = _installed(venv / "bin" / "python")
    assert installed - {"pip", "setuptools"} == runtime_requirements() | {"auth-sidecar"}
    assert installed & tools_for_tests() == set()
    version = subprocess.run([venv / "bin" / "sidecar", "--version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.strip() == f"sidecar {sidecar.__version__}"

    again = _make("venv-runtime", f"VENV={venv}")
    assert again.returncode == 0 and again.stdout == "", again.stdout + again.stderr
