"""`python -m bench`: run everything once (rounds, streaming, key flood, profile) and write BENCHMARKS.md."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench.experiment import run_experiments, run_granian, run_pythons
from bench.flood import run_flood
from bench.lab import lab
from bench.machine import describe
from bench.profiling import run_profiles
from bench.ratelimit import run_ratelimit
from bench.report import write
from bench.rounds import run_rounds
from bench.streaming import run_streaming
from bench.targets import BENCH_DIR, REPO, Target, sidecar_has_workers

_RESULTS = BENCH_DIR / "run" / "results.json"
_PARTS = ("rounds", "streaming", "flood", "ratelimit", "profile")
_EXTRA = ("experiments", "pythons", "granian")  # run only when asked for


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 10)))
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md")
    parser.add_argument("--only", choices=[*_PARTS, *_EXTRA], action="append", help="run this part (repeatable)")
    parser.add_argument("--experiments", action="store_true", help="also measure bench/launch.py's variants")
    parser.add_argument("--report-only", action="store_true", help=f"rewrite --out from {_RESULTS}")
    return parser.parse_args(argv)


def _stop_on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so every started process is stopped on the way out (lab's ExitStack)


def _run(args: argparse.Namespace) -> dict[str, Any]:
    parts = set(args.only or [*_PARTS, *(["experiments"] if args.experiments else [])])
    # A partial run (--only) updates the last results rather than dropping the parts it did not run.
    previous = json.loads(_RESULTS.read_text()) if args.only and _RESULTS.exists() else {}
    workers = sidecar_has_workers()
    targets = [Target("envoy", 1), Target("sidecar", 1), Target("envoy", 2)]
    targets += [Target("sidecar", 2)] if workers else []
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "make bench" + (f" BENCH_ARGS='{_flags(args)}'" if _flags(args) else ""),
        "load_before": os.getloadavg(),
        "machine": describe(),
        "rounds": args.rounds,
        "seconds": args.seconds,
        "pending": [] if workers else ["sidecar-2"],
    }
    # A partial run (--only) adds its parts to the last full run's results, and says so.
    results = {**meta, **previous} if previous else meta
    if previous:
        results.setdefault("partial_runs", []).append({**meta, "parts": sorted(parts)})
    begun = time.monotonic()
    with lab() as shared:
        if "rounds" in parts:
            results["rounds_data"] = run_rounds(shared, targets, args.rounds, args.seconds)
        if "streaming" in parts:
            results["streaming"] = run_streaming(shared)
        if "flood" in parts:
            flooded = [Target("envoy", 1), Target("sidecar", 1)] + ([Target("sidecar", 2)] if workers else [])
            results["flood"] = run_flood(shared, flooded)
        if "ratelimit" in parts:
            results["ratelimit"] = run_ratelimit(shared, args.rounds, args.seconds)
        if "profile" in parts:
            results["profiles"] = run_profiles(shared)
        if "experiments" in parts:
            results["experiments"] = run_experiments(shared, args.rounds, args.seconds)
        if "pythons" in parts:
            results["pythons"] = run_pythons(shared, args.rounds, args.seconds)
        if "granian" in parts:
            results["granian"] = run_granian(shared, args.rounds, args.seconds)
        results.setdefault("elapsed_s", time.monotonic() - begun)
        _RESULTS.write_text(json.dumps(results, indent=1))
    return results


def _flags(args: argparse.Namespace) -> str:
    flags = [f"--rounds {args.rounds}"] if args.rounds != 3 else []
    flags += [f"--seconds {args.seconds:g}"] if args.seconds != 10 else []
    flags += [f"--only {part}" for part in args.only or []] + (["--experiments"] if args.experiments else [])
    return " ".join(flags)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    signal.signal(signal.SIGTERM, _stop_on_term)
    if args.report_only:
        results = json.loads(_RESULTS.read_text())
    else:
        results = _run(args)
    results.setdefault("rounds_data", [])
    write(results, args.out)
    print(f"bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
