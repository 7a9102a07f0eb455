"""`make mutate`: mutation testing of the security-critical modules with mutmut 3, scored per module in MUTATION.md.

mutmut changes one thing at a time in the modules of `[tool.mutmut] only_mutate` (pyproject.toml) and runs the tests
that reached the changed function; a mutant no test notices is a mistake the suite would let through. This runs
mutmut (`MUTATE_CHILDREN` processes, default 2), reads its results, and rewrites MUTATION.md: the score per module
(killed / mutants that are not equivalent) and every survivor by name. The section "Equivalent mutants" is written
by hand (one line per mutant, with why it cannot change behaviour) and kept as it is; the command only reads it.

`MUTATE_ONLY` (environment; module paths such as `sidecar/edge/forward_auth.py`, separated by spaces or commas) runs
the mutants of those modules only, every one of them again, and rewrites only their rows and survivors in
MUTATION.md: the other modules' rows are kept as the last run wrote them (a module never run here keeps its row).

`--survivors` runs again only the mutants (of MUTATE_ONLY's modules, or all) that no test has killed yet: after adding
tests, that is what can change.

Usage: python tools/mutate.py [--report-only | --survivors] [mutmut name patterns...]. Exit 1 when a module is under
the target.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
REPORT: Final = ROOT / "MUTATION.md"
MUTMUT: Final = str(Path(sys.executable).parent / "mutmut")
TARGET: Final = 90.0  # percent of the non-equivalent mutants killed, in every module
EQUIVALENT_HEADING: Final = "## Equivalent mutants"
# A mutant counts as killed when a test failed, timed out (a mutant that hangs is noticed) or mypy refused it.
KILLED: Final = frozenset({"killed", "timeout", "caught by type check", "segfault"})
_RESULT: Final = re.compile(r"^\s*(\S+__mutmut_\d+): (.+)$")
_LISTED: Final = re.compile(r"^- `([^`]+__mutmut_\d+)`")


@dataclass
class Score:
    """One module's mutants by outcome."""

    total: int = 0
    killed: int = 0
    equivalent: int = 0
    not_run: int = 0  # no verdict yet (a run cut short): counted as not killed
    survivors: list[tuple[str, str]] = field(default_factory=list)  # name, status (survived, no tests, ...)

    @property
    def percent(self) -> float:
        counted = self.total - self.equivalent
        return 100.0 if counted == 0 else 100.0 * self.killed / counted


def modules() -> list[str]:
    """The mutated modules, as dotted names, in the order pyproject.toml lists them."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [path.removesuffix(".py").replace("/", ".") for path in config["only_mutate"]]


def only(value: str, names: list[str]) -> list[str]:
    """MUTATE_ONLY's modules as dotted names (paths or dotted names accepted); an unknown module is an error."""
    chosen = [item.removesuffix(".py").replace("/", ".") for item in re.split(r"[\s,]+", value) if item]
    unknown = [module for module in chosen if module not in names]
    if unknown:
        sys.exit(f"MUTATE_ONLY: not in [tool.mutmut] only_mutate: {', '.join(unknown)}")
    return chosen


def kept_parts(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The last report's table row and survivor lines of each module (for the modules a MUTATE_ONLY run leaves)."""
    rows: dict[str, str] = {}
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text[: text.find(EQUIVALENT_HEADING)].splitlines() if EQUIVALENT_HEADING in text else []:
        if match := re.match(r"^\| `([^`]+)` \|", line):
            rows[match.group(1)] = line
        elif match := re.match(r"^### `([^`]+)`$", line):
            current = blocks.setdefault(match.group(1), [])
        elif line.startswith(("## ", "Listed as equivalent")):
            current = None
        elif current is not None and line.startswith("- "):
            current.append(line)
    return rows, blocks


def run_mutmut(patterns: list[str]) -> None:
    children = os.environ.get("MUTATE_CHILDREN", "2")
    subprocess.run([MUTMUT, "run", "--max-children", children, *patterns], cwd=ROOT, check=True)


def results() -> dict[str, str]:
    """Every mutant mutmut knows of, by name: its status."""
    out = subprocess.run([MUTMUT, "results", "--all", "true"], cwd=ROOT, check=True, capture_output=True, text=True)
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        if match := _RESULT.match(line):
            found[match.group(1)] = match.group(2).strip()
    return found


def module_of(name: str, names: list[str]) -> str | None:
    """`sidecar.upstream.pool.xǁPoolǁrelease__mutmut_3` -> `sidecar.upstream.pool`."""
    candidates = [module for module in names if name.startswith(module + ".")]
    return max(candidates, key=len) if candidates else None


def equivalent_section(text: str) -> str:
    """The hand-maintained section, from its heading to the end of the file (a default one when missing)."""
    start = text.find(EQUIVALENT_HEADING)
    if start != -1:
        return text[start:].rstrip() + "\n"
    return (
        f"{EQUIVALENT_HEADING}\n\nHand-maintained: one line per mutant, `- \\`name\\`: why no input can tell it"
        " from the original`. `make mutate` keeps this section as it is.\n"
    )


def listed(section: str) -> set[str]:
    return {match.group(1) for line in section.splitlines() if (match := _LISTED.match(line))}


def changed_line(name: str) -> str:
    """The mutated line (for the report: what the surviving change is). mutmut's own `show`, in this process: a
    `mutmut show` per survivor costs a start-up each."""
    from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant

    os.chdir(ROOT)
    diff = get_diff_for_mutant(name, path=find_mutant(name).path)
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("++")]
    return added[0] if added else ""


def function_of(name: str) -> str:
    """`sidecar.upstream.pool.xǁPoolǁrelease__mutmut_3` -> `Pool.release`."""
    local = name.rsplit(".", 1)[-1].split("__mutmut_")[0]
    return local.removeprefix("x").strip("ǁ").replace("ǁ", ".") if "ǁ" in local else local[2:]


def score(found: dict[str, str], equivalent: set[str], names: list[str]) -> dict[str, Score]:
    scores = {module: Score() for module in names}
    for name, status in sorted(found.items()):
        module = module_of(name, names)
        if module is None:
            continue
        entry = scores[module]
        entry.total += 1
        if status in KILLED:
            entry.killed += 1
        elif name in equivalent:
            entry.equivalent += 1
        else:
            entry.not_run += status == "not checked"
            entry.survivors.append((name, status))
    return scores


def report(scores: dict[str, Score], section: str, stale: list[str], previous: str = "") -> str:
    """The whole MUTATION.md. A module without mutants in `scores` (not run by a MUTATE_ONLY run) keeps its row and
    survivors from `previous`, the report as it was; one never run here gets a row saying so."""
    kept_rows, kept_blocks = kept_parts(previous)
    lines = [
        "# Mutation testing",
        "",
        "Written by `make mutate` (tools/mutate.py, mutmut 3; not part of `make test`) except the last section."
        " Each mutant is one small change to a security-critical module (a comparison flipped, a constant or a"
        " condition changed, a call dropped); a test must fail for it. Score: mutants killed / mutants that are not"
        f" equivalent. Target: at least {TARGET:.0f}% in every module. The tests run are the in-process ones listed in"
        " `[tool.mutmut]` of pyproject.toml, each mutant against the tests that reached its function. A mutant not run"
        " yet (a run cut short) counts as not killed; `make mutate` goes on from where mutmut stopped (`mutants/`)."
        " `make mutate MUTATE_ONLY='sidecar/edge/forward_auth.py ...'` runs the named modules again and rewrites"
        " their rows only; add `MUTATE_ARGS=--survivors` to run only their mutants no test has killed yet (after"
        " adding tests). Tests build what they check inside the test: mutmut forks each mutant's run from a process"
        " that imported the test modules with the original code (tests/conftest.py clears the memoised results).",
        "",
        "| module | killed | not equivalent | equivalent | not run yet | total | score | run (UTC) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    for module, entry in scores.items():
        if entry.total == 0:
            lines.append(kept_rows.get(module, f"| `{module}` | | | | | | not run | |"))
            continue
        counted = entry.total - entry.equivalent
        lines.append(
            f"| `{module}` | {entry.killed} | {counted} | {entry.equivalent} | {entry.not_run} | {entry.total} |"
            f" {entry.percent:.1f}% | {today} |"
        )
    lines += ["", "## Surviving mutants", ""]
    body: list[str] = []
    for module, entry in scores.items():
        if entry.total == 0 and kept_blocks.get(module):
            body += [f"### `{module}`", "", *kept_blocks[module], ""]
        if not entry.survivors:
            continue
        body += [f"### `{module}`", ""]
        untested: Counter[str] = Counter()
        for name, status in entry.survivors:
            if status in ("no tests", "not checked"):  # no selected test reaches it, or mutmut has not run it yet
                untested[f"{function_of(name)}` ({status}"] += 1
                continue
            change = changed_line(name).replace("`", "'")
            body.append(f"- `{name}` ({status}): `{change}`" if change else f"- `{name}` ({status})")
        for function, count in sorted(untested.items()):
            body.append(f"- `{function}): {count} mutants")
        body.append("")
    lines += body or ["None."]
    if stale:
        lines += ["", "Listed as equivalent but killed or no longer generated (remove from the list below):", ""]
        lines += [f"- `{name}`" for name in stale]
    return "\n".join(lines).rstrip() + "\n\n" + section


def main(argv: list[str]) -> int:
    report_only, again = "--report-only" in argv, "--survivors" in argv
    patterns = [arg for arg in argv if arg not in ("--report-only", "--survivors")]
    names = modules()
    chosen = only(os.environ.get("MUTATE_ONLY", ""), names)
    if again:
        patterns += [
            name
            for name, status in results().items()
            if status not in KILLED and (not chosen or module_of(name, names) in chosen)
        ]
        if not patterns:
            print("no surviving mutants to run again")
            report_only = True
    elif chosen and not patterns:  # every mutant of these modules, run again (mutmut reruns those named)
        patterns += [f"{module}.*" for module in chosen]
    if not report_only:
        run_mutmut(patterns)
        # mutmut skips mutants it has a verdict for: survivors run again, so tests added since can kill them.
        survivors = [name for name, status in results().items() if status not in KILLED]
        if survivors and not patterns:
            run_mutmut(survivors)
    found = results()
    if chosen:  # the other modules' mutants were not run: their rows stay as the last report has them
        found = {name: status for name, status in found.items() if module_of(name, names) in chosen}
    previous = REPORT.read_text() if REPORT.exists() else ""
    section = equivalent_section(previous)
    equivalent = listed(section)
    ours = [name for name in equivalent if not chosen or module_of(name, names) in chosen]
    stale = sorted(name for name in ours if found.get(name, "killed") in KILLED)
    scores = score(found, equivalent, names)
    REPORT.write_text(report(scores, section, stale, previous))
    statuses = Counter(found.values())
    print(f"MUTATION.md written: {len(found)} mutants, " + ", ".join(f"{n} {s}" for s, n in statuses.most_common()))
    under = [module for module, entry in scores.items() if entry.total and entry.percent < TARGET]
    for module in under:
        print(f"under {TARGET:.0f}%: {module} ({scores[module].percent:.1f}%)", file=sys.stderr)
    return 1 if under else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
