"""Ideas measured before anyone edits sidecar/: a one-worker sidecar per variant (bench/launch.py), interleaved."""

from __future__ import annotations

import statistics
from typing import Any, Final

from bench.lab import Lab
from bench.rounds import ALLOWED, run_target
from bench.targets import Target

__all__ = ["VARIANTS", "run_experiments"]

VARIANTS: Final = ("baseline", "gcthreshold", "coalesce", "nolog")


def run_experiments(lab: Lab, rounds: int, seconds: float) -> dict[str, Any]:
    """Each round runs every variant (order rotated) through the allowed rows; medians and ratios to baseline."""
    raw: list[dict[str, Any]] = []
    for number in range(rounds):
        shift = number % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            entry = run_target(Target("sidecar", 1, variant), lab, seconds, ALLOWED)
            raw.append({"round": number + 1, "variant": variant, **entry})
            rps = ", ".join(f"{r['scenario']} {r['wrk']['rps']:.0f}/s" for r in entry["rows"])
            print(f"bench: experiment round {number + 1} {variant}: {rps}")
    return {"rounds": rounds, "seconds": seconds, "raw": raw, "summary": _summary(raw)}


def _metric(raw: list[dict[str, Any]], variant: str, scenario: str, name: str) -> dict[int, float]:
    out = {}
    for entry in raw:
        for row in entry["rows"]:
            if entry["variant"] == variant and row["scenario"] == scenario:
                out[entry["round"]] = float(row["wrk"].get(name, row.get(name)))
    return out


def _summary(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for variant in VARIANTS:
        for scenario in (s.key for s in ALLOWED):
            row: dict[str, Any] = {"variant": variant, "scenario": scenario}
            for name in ("rps", "p50_us", "p99_us", "cpu_us_per_req"):
                mine, base = _metric(raw, variant, scenario, name), _metric(raw, "baseline", scenario, name)
                ratios = [mine[r] / base[r] for r in mine if base.get(r)]
                row[name] = statistics.median(mine.values()) if mine else None
                row[name + "_ratio"] = statistics.median(ratios) if ratios else None
            rows.append(row)
    return rows
