"""ConfigMap and Secret volumes laid out as the kubelet writes them, so that updates arrive as they do in a pod.

The kubelet's AtomicWriter puts the files in a timestamped directory, points the `..data` symlink at it, and links
each file name to `..data/<name>`. An update writes a new timestamped directory and renames a fresh symlink over
`..data`: one atomic swap. The file itself is never written in place, which is why a watcher must stat through
the symlinks (and why a subPath mount never sees an update).
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

__all__ = ["write_atomically"]

_generation = itertools.count(1)


def write_atomically(directory: Path, files: Mapping[str, str]) -> None:
    """Create or update a volume directory with `files` (name -> text), as the kubelet does."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "..data"
    previous = data.resolve() if data.is_symlink() else None
    payload = directory / f"..{next(_generation):04d}_payload"
    payload.mkdir()
    for name, text in files.items():
        (payload / name).write_text(text)
    staged = directory / "..data_tmp"
    staged.symlink_to(payload.name)
    os.replace(staged, data)  # the one atomic step: readers see the old files or the new ones
    for name in files:
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")
    if previous is not None:
        shutil.rmtree(previous)
