"""Ideas measured before anyone edits sidecar/: one-worker sidecars side by side, interleaved round by round.

Two comparisons use it: the variants of bench/launch.py (`--experiments`), and the Pythons the image could be
built on (`--only pythons`: the sidecar on each `.venv-3.X`, with one Envoy thread as the peer in every round).
"""

from __future__ import annotations

import statistics
from typing import Any, Final

from bench.granian_conformance import run_conformance
from bench.lab import Lab
from bench.rounds import ALLOWED, REJECTED, Scenario, run_target
from bench.targets import Target, granian_version

__all__ = ["PYTHONS", "VARIANTS", "run_experiments", "run_granian", "run_pythons"]

VARIANTS: Final = ("baseline", "gcthreshold", "coalesce", "nolog")
PYTHONS: Final = ("3.11", "3.13")  # the first is the baseline: the image's Python before the comparison


def run_experiments(lab: Lab, rounds: int, seconds: float) -> dict[str, Any]:
    """Each round runs every variant (order rotated) through the allowed rows; medians and ratios to baseline."""
    targets = {variant: Target("sidecar", 1, variant) for variant in VARIANTS}
    return _interleaved(lab, rounds, seconds, targets, ALLOWED, "experiment")


def run_pythons(lab: Lab, rounds: int, seconds: float, pythons: tuple[str, ...] = PYTHONS) -> dict[str, Any]:
    """The one-worker sidecar on each Python (`.venv-3.X`) and one Envoy thread, every row, order rotated."""
    targets = {f"python {version}": Target("sidecar", 1, python=version) for version in pythons}
    targets["envoy 1 thread"] = Target("envoy", 1)
    return _interleaved(lab, rounds, seconds, targets, ALLOWED + REJECTED, "pythons")


def run_granian(lab: Lab, rounds: int, seconds: float) -> dict[str, Any]:
    """The one-worker Gate under uvicorn (`sidecar serve`, the baseline) and under granian, and one Envoy thread,
    through the 64-connection rows, order rotated; then the raw-socket conformance replay against both fronts."""
    targets = {
        "uvicorn (sidecar serve)": Target("sidecar", 1),
        "granian": Target("sidecar", 1, front="granian"),
        "envoy 1 thread": Target("envoy", 1),
    }
    rows = tuple(s for s in ALLOWED + REJECTED if s.connections == 64)
    measured = _interleaved(lab, rounds, seconds, targets, rows, "granian")
    return {**measured, "version": granian_version(), "conformance": run_conformance(lab)}


def _interleaved(
    lab: Lab, rounds: int, seconds: float, targets: dict[str, Target], scenarios: tuple[Scenario, ...], part: str
) -> dict[str, Any]:
    names = list(targets)
    raw: list[dict[str, Any]] = []
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            entry = run_target(targets[name], lab, seconds, scenarios)
            raw.append({"round": number + 1, "variant": name, **entry})
            rps = ", ".join(f"{r['scenario']} {r['wrk']['rps']:.0f}/s" for r in entry["rows"])
            print(f"bench: {part} round {number + 1} {name}: {rps}")
    summary = _summary(raw, names, [s.key for s in scenarios])
    return {"rounds": rounds, "seconds": seconds, "raw": raw, "summary": summary}


def _metric(raw: list[dict[str, Any]], variant: str, scenario: str, name: str) -> dict[int, float]:
    out = {}
    for entry in raw:
        for row in entry["rows"]:
            if entry["variant"] == variant and row["scenario"] == scenario:
                out[entry["round"]] = float(row["wrk"].get(name, row.get(name)))
    return out


def _summary(raw: list[dict[str, Any]], names: list[str], scenarios: list[str]) -> list[dict[str, Any]]:
    """Medians per name and scenario, and the median of the per-round ratios to the first name (the baseline)."""
    rows = []
    for variant in names:
        for scenario in scenarios:
            row: dict[str, Any] = {"variant": variant, "scenario": scenario}
            for name in ("rps", "p50_us", "p99_us", "cpu_us_per_req"):
                mine, base = _metric(raw, variant, scenario, name), _metric(raw, names[0], scenario, name)
                ratios = [mine[r] / base[r] for r in mine if base.get(r)]
                row[name] = statistics.median(mine.values()) if mine else None
                row[name + "_ratio"] = statistics.median(ratios) if ratios else None
            other = [
                r["other_cores"] for e in raw if e["variant"] == variant for r in e["rows"] if r["scenario"] == scenario
            ]
            row["other_cores"] = statistics.median(other) if other else None
            rows.append(row)
    return rows
