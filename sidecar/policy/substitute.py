"""Expand `${VAR}`, `${file:/path}` and `$$` inside one string scalar, after YAML parsing.

Expanding per scalar, after the YAML structure is fixed, means a secret containing `:`, `#` or a newline cannot
change the structure of the policy. Nothing here ever puts an expanded value into a message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Expansion", "expand"]

# `$$`, a complete `${...}` (no nested braces), or a `${` that never closes.
_TOKEN = re.compile(r"\$\$|\$\{([^{}]*)\}|\$\{")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FILE = "file:"


@dataclass(slots=True)
class Expansion:
    """The expanded text, every inserted value (to scrub from messages), what went wrong, and, for each reference
    whose value starts or ends with whitespace (a Secret written with `echo`), a phrase naming it and the whitespace
    (for any error about the value; the value itself is never shown)."""

    value: str
    secrets: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    line_ends: list[str] = field(default_factory=list)


def expand(text: str, environ: Mapping[str, str]) -> Expansion:
    """Replace every reference in `text`. A lone `$` not followed by `{` or `$` stays as it is."""
    if "$" not in text:
        return Expansion(text)
    result = Expansion("")

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$$":
            return "$"
        inner = match.group(1)
        if inner is None:
            result.errors.append('unterminated "${": close it with "}", or write "$$" for a literal "$"')
            return ""
        value = _resolve(inner, environ, result.errors)
        if value:
            result.secrets.append(value)
        edge = _edge(value)
        if edge:
            result.line_ends.append(f"the value of {token} {edge}")
        return value

    result.value = _TOKEN.sub(replace, text)
    return result


def _edge(value: str) -> str:
    """What whitespace `value` has at its ends, in words; "" when none."""
    if value.endswith(("\n", "\r")):
        return "ends with a newline (written with `echo`?)"
    if value != value.rstrip():
        return "ends with whitespace"
    if value != value.lstrip():
        return "starts with whitespace"
    return ""


def _resolve(inner: str, environ: Mapping[str, str], errors: list[str]) -> str:
    if inner.startswith(_FILE):
        return _read_file(inner[len(_FILE) :], errors)
    if not _VAR_NAME.fullmatch(inner):
        errors.append(
            f'invalid reference "${{{inner}}}": use ${{NAME}} (letters, digits, _), ${{file:/absolute/path}}, '
            'or "$$" for a literal "$"'
        )
        return ""
    if inner not in environ:
        errors.append(f"environment variable {inner} is not set")
        return ""
    return environ[inner]


def _read_file(path: str, errors: list[str]) -> str:
    """Read a mounted secret; the file's trailing newline is an artefact of how it was written, not the value."""
    if not os.path.isabs(path):
        errors.append(f"${{file:...}} needs an absolute path, got {path!r}")
        return ""
    try:
        text = Path(path).read_bytes().decode("utf-8")  # bytes: no newline translation inside the secret
    except FileNotFoundError:
        errors.append(f"file {path} does not exist")
        return ""
    except UnicodeDecodeError:
        errors.append(f"file {path} is not UTF-8 text")
        return ""
    except OSError as exc:
        errors.append(f"cannot read file {path}: {exc.strerror or type(exc).__name__}")
        return ""
    if text.endswith("\r\n"):
        return text[:-2]
    return text.removesuffix("\n")
