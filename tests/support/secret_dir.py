"""A directory laid out as the kubelet mounts a Kubernetes Secret, and updated as it (and so cert-manager) does:
each version in a `..<timestamp>` directory, `..data` a symlink to the current one, each key a symlink through
`..data`; an update writes a new version and swaps `..data` with one rename (atomic)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SecretDir"]


class SecretDir:
    def __init__(self, root: Path, files: Mapping[str, bytes]) -> None:
        self.root = root
        self._versions = itertools.count()
        root.mkdir(parents=True, exist_ok=True)
        self.update(files)
        for name in files:
            os.symlink(f"..data/{name}", root / name)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def update(self, files: Mapping[str, bytes]) -> None:
        version = self.root / f"..2026_12_02_{next(self._versions):04d}"
        version.mkdir()
        for name, data in files.items():
            (version / name).write_bytes(data)
        staging = self.root / "..data_tmp"
        os.symlink(version.name, staging)
        os.replace(staging, self.root / "..data")
