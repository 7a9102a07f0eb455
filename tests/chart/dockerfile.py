"""The Dockerfile read as Docker reads it: instructions (continuations joined, comments dropped) grouped by stage."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Instruction", "Stage", "env_of", "exec_form", "parse_dockerfile"]


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper-cased: FROM, RUN, COPY, ...
    argument: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.argument for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):  # comments (and parser directives), also inside a continued instruction
            continue
        pending = f"{pending[:-1]} {stripped}" if pending.endswith("\\") else stripped
        if not pending.endswith("\\"):
            if pending:
                lines.append(pending)
            pending = ""
    return lines


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults (those before the first FROM), and the stages in order, with ${ARG} in FROM resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, argument = line.partition(" ")
        keyword, argument = keyword.upper(), re.sub(r"\s+", " ", argument.strip())
        if keyword == "FROM":
            words = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), argument).split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages and keyword == "ARG":
            key, _, default = argument.partition("=")
            args[key] = default
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, argument))
    return args, stages


def exec_form(argument: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT or CMD (a shell-form string is an error here)."""
    value = json.loads(argument)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), argument
    return value


def env_of(stage: Stage) -> dict[str, str]:
    """The stage's ENV, `KEY=VALUE` pairs (shell-quoted values allowed); $VAR references stay as written."""
    env: dict[str, str] = {}
    for argument in stage.all("ENV"):
        for pair in shlex.split(argument):
            key, _, value = pair.partition("=")
            env[key] = value
    return env
