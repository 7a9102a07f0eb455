"""SECURITY.md names, for each defence, the tests that prove it: every one it names exists, so the file cannot
silently point at a test that was renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECURITY = (ROOT / "SECURITY.md").read_text()


def _references() -> list[tuple[str, str]]:
    """(file, test) for every `file::test` and every `::test` after it in the same cell (the file is implied)."""
    found = []
    for cell in re.findall(r"\|([^|\n]*`[^|\n]*::[^|\n]*)\|", SECURITY):
        current = ""
        for file, name in re.findall(r"`([\w/.]*)::(\w+)`", cell):
            current = file or current
            found.append((current, name))
    return found


REFERENCES = _references()


def test_security_md_names_tests() -> None:
    assert len(REFERENCES) >= 40


@pytest.mark.parametrize(("file", "name"), REFERENCES, ids=[f"{f}::{n}" for f, n in REFERENCES])
def test_every_test_security_md_names_exists(file: str, name: str) -> None:
    source = (ROOT / file).read_text()
    assert re.search(rf"^(async )?def {name}\(", source, re.MULTILINE), f"{file} has no test {name}"
