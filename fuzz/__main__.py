"""`make fuzz`: every target under atheris for its share of a time budget; exits 1 on any finding.

    python -m fuzz [--seconds N] [TARGET ...]     (N defaults to $FUZZ_SECONDS, else 600, split evenly)

Each target runs in its own process (`python -m fuzz.run`) on a working corpus in build/fuzz/corpus/TARGET (kept
between runs, so fuzzing resumes where it stopped) seeded from fuzz/corpus/TARGET. A finding is written to
build/fuzz/findings/TARGET-crash-* (or -timeout-*, -oom-*); its traceback is in build/fuzz/TARGET.log. Turn each
into a row of tests/test_fuzz_regressions.py, then fix it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
FUZZ: Final = ROOT / "fuzz"
BUILD: Final = ROOT / "build" / "fuzz"
# fuzz.targets.TARGETS, without importing the code
TARGETS: Final = ("paths", "bearer", "headers", "tokens", "upstream_response", "jwks")
# libFuzzer flags per target: longer inputs where the code has a length limit to cross (a response head: 64 KiB).
_EXTRA: Final = {
    "paths": ["-max_len=9000"],
    "tokens": ["-max_len=12000"],
    "upstream_response": ["-max_len=70000"],
    "jwks": ["-max_len=16000"],
}
_STATS: Final = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)
_COVERAGE: Final = re.compile(r"cov: (\d+) ft: (\d+) corp: (\d+)")


def _command(target: str, seconds: int) -> list[str]:
    dictionary = FUZZ / "dicts" / f"{target}.dict"
    return [
        sys.executable,
        "-m",
        "fuzz.run",
        target,
        f"-max_total_time={seconds}",
        "-timeout=10",  # one input taking longer is a finding (a hang), not a slow run
        "-rss_limit_mb=2048",
        f"-artifact_prefix={BUILD / 'findings'}/{target}-",
        *([f"-dict={dictionary}"] if dictionary.exists() else []),
        *_EXTRA.get(target, []),
        str(BUILD / "corpus" / target),
        str(FUZZ / "corpus" / target),
    ]


def run(target: str, seconds: int) -> bool:
    """Fuzz one target; True when it ran its time without a finding."""
    (BUILD / "corpus" / target).mkdir(parents=True, exist_ok=True)
    (BUILD / "findings").mkdir(parents=True, exist_ok=True)
    log = BUILD / f"{target}.log"
    with log.open("w") as out:
        try:
            code = subprocess.run(
                _command(target, seconds), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=seconds + 300
            ).returncode
        except subprocess.TimeoutExpired:  # run() has killed it: libFuzzer itself stopped answering
            code = -1
    text = log.read_text(errors="replace")
    done, coverage = _STATS.search(text), _COVERAGE.findall(text)
    runs = f"{done[1]} runs in {done[2]} s" if done else "no final stats"
    cov = f", cov {coverage[-1][0]} ft {coverage[-1][1]} corpus {coverage[-1][2]}" if coverage else ""
    verdict = "ok" if code == 0 else f"FINDING (exit {code}), see {log.relative_to(ROOT)}"
    print(f"fuzz {target}: {runs}{cov}: {verdict}", flush=True)
    return code == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS") or 600))
    parser.add_argument("targets", nargs="*", metavar="TARGET", help=f"default: all of {', '.join(TARGETS)}")
    args = parser.parse_args(argv)
    targets = args.targets or list(TARGETS)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown targets: {', '.join(unknown)}")
    share = max(args.seconds // len(targets), 1)
    print(f"fuzzing {', '.join(targets)} for {share} s each", flush=True)
    failed = [target for target in targets if not run(target, share)]
    if failed:
        print(f"findings in {', '.join(failed)}: inputs in {BUILD / 'findings'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
