"""Figures out of the rounds: a metric per (round, target, scenario), medians, and ratios taken within a round."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

__all__ = ["Figures"]

_ORDER = ("direct", "envoy-1", "sidecar-1", "envoy-2", "sidecar-2")


class Figures:
    def __init__(self, rounds: list[dict[str, Any]]) -> None:
        self.rounds = rounds

    def targets(self) -> list[str]:
        present = {entry["target"] for entry in self.rounds}
        return [t for t in _ORDER if t in present] + sorted(present - set(_ORDER))

    def scenarios(self, target: str) -> list[str]:
        seen: list[str] = []
        for entry in self._entries(target):
            seen += [row["scenario"] for row in entry["rows"] if row["scenario"] not in seen]
        return seen

    def _entries(self, target: str) -> list[dict[str, Any]]:
        return [entry for entry in self.rounds if entry["target"] == target]

    def _metric(self, row: dict[str, Any], metric: str) -> float | None:
        value = row["wrk"].get(metric, row.get(metric))
        return None if value is None else float(value)

    def by_round(self, target: str, scenario: str, metric: str) -> dict[int, float]:
        out = {}
        for entry in self._entries(target):
            for row in entry["rows"]:
                value = self._metric(row, metric)
                if row["scenario"] == scenario and value is not None:
                    out[entry["round"]] = value
        return out

    def values(self, target: str, scenario: str, metric: str) -> list[float]:
        return list(self.by_round(target, scenario, metric).values())

    def all_ok(self, target: str, scenario: str) -> bool:
        return all(row["ok"] for entry in self._entries(target) for row in entry["rows"] if row["scenario"] == scenario)

    @staticmethod
    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    def ratios(self, combine: Callable[[int], float | None]) -> list[float]:
        """`combine(round)` for every round where it is defined."""
        rounds = sorted({entry["round"] for entry in self.rounds})
        return [value for value in (combine(r) for r in rounds) if value is not None]

    def round_ratios(self, a: str, b: str, scenario: str, metric: str, b_scenario: str | None = None) -> list[float]:
        """a's metric over b's, within each round."""
        mine, theirs = self.by_round(a, scenario, metric), self.by_round(b, b_scenario or scenario, metric)
        return self.ratios(lambda r: mine[r] / theirs[r] if r in mine and theirs.get(r) else None)

    def median_ratio(self, a: str, b: str, scenario: str, metric: str) -> float | None:
        return self.median(self.round_ratios(a, b, scenario, metric))

    def added_latency_ratios(self, target: str, envoy: str, scenario: str, metric: str) -> list[float]:
        """(target - direct) / (envoy - direct) within each round: the latency each proxy adds, compared."""
        mine, theirs = self.by_round(target, scenario, metric), self.by_round(envoy, scenario, metric)
        direct = self.by_round("direct", scenario, metric)

        def one(r: int) -> float | None:
            if r not in mine or r not in theirs or r not in direct or theirs[r] <= direct[r]:
                return None
            return (mine[r] - direct[r]) / (theirs[r] - direct[r])

        return self.ratios(one)

    def ready(self, target: str) -> list[float]:
        return [entry["ready_s"] for entry in self._entries(target) if entry["ready_s"] is not None]

    def peak_per_process_mib(self, target: str) -> float | None:
        peaks = [max(entry["hwm_kib"]) for entry in self._entries(target) if entry["hwm_kib"]]
        return max(peaks) / 1024 if peaks else None

    def peak_total_mib(self, target: str) -> float | None:
        totals = [sum(entry["hwm_kib"]) for entry in self._entries(target) if entry["hwm_kib"]]
        return max(totals) / 1024 if totals else None
