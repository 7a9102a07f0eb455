"""The project's dependency sets, read from pyproject.toml and the installed distributions' metadata: what the
product needs at run time (the image and `make demo` install that and nothing else), and the test tools."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

__all__ = ["ROOT", "RUNTIME_TOO", "project", "runtime_requirements", "tools_for_tests"]

ROOT = Path(__file__).resolve().parents[2]
# In the test extra and needed at run time as well (limits imports packaging): no test tool in the image.
RUNTIME_TOO = frozenset({"packaging"})


def project() -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return table


def runtime_requirements() -> set[NormalizedName]:
    """Every distribution `pip install .` pulls in (this environment's markers), the package itself excluded: the
    direct ones as pyproject.toml lists them now, theirs from the installed distributions' metadata."""
    seen: set[NormalizedName] = set()
    _add(project()["dependencies"], frozenset(), seen)
    return seen


def _add(requirements: list[str], extras: frozenset[str], seen: set[NormalizedName]) -> None:
    for text in requirements:
        requirement = Requirement(text)
        environments = [{"extra": extra} for extra in extras] or [{"extra": ""}]
        if requirement.marker and not any(requirement.marker.evaluate(env) for env in environments):
            continue
        key = canonicalize_name(requirement.name)
        if key not in seen:
            seen.add(key)
            _add(metadata.requires(requirement.name) or [], frozenset(requirement.extras), seen)


def tools_for_tests() -> set[NormalizedName]:
    """The test extra's distributions that the product does not need at run time."""
    names = {canonicalize_name(Requirement(text).name) for text in project()["optional-dependencies"]["test"]}
    return names - RUNTIME_TOO
