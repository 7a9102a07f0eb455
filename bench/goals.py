"""The targets of issue 8, each measured as a ratio within the same run, and whether it is met."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Final

from bench.figures import Figures

__all__ = ["goals_table"]

_MIB: Final = 1024


@dataclass(frozen=True)
class _Goal:
    name: str
    goal: str
    values: list[float]  # one per round (or one per measurement)
    limit: float
    at_least: bool  # True: values must be >= limit; False: <= limit
    unit: str = "x"
    pending: str = ""

    def row(self) -> str:
        if self.pending or not self.values:
            return f"| {self.name} | {self.goal} | {self.pending or 'not measured'} | | pending |"
        ordered = sorted(self.values)
        median = statistics.median(ordered)
        met = median >= self.limit if self.at_least else median <= self.limit
        span = f"{ordered[0]:.2f}–{ordered[-1]:.2f}{self.unit}" if len(ordered) > 1 else ""
        return (
            f"| {self.name} | {self.goal} | **{median:.2f}{self.unit}** | {span} | {'met' if met else '**not met**'} |"
        )


def _throughput(fig: Figures, results: dict[str, Any]) -> list[_Goal]:
    pending = "pending: no `--workers` at run time" if "sidecar-2" in results.get("pending", []) else ""
    return [
        _Goal(
            "1 worker, 64 conns, req/s",
            ">= 0.6x Envoy 1 thread",
            fig.round_ratios("sidecar-1", "envoy-1", "valid-64", "rps"),
            0.6,
            True,
        ),
        _Goal(
            "2 workers, 64 conns, req/s",
            ">= 0.8x Envoy 2 threads",
            fig.round_ratios("sidecar-2", "envoy-2", "valid-64", "rps"),
            0.8,
            True,
            pending=pending,
        ),
        _Goal(
            "added p50 over direct, 1 conn",
            "<= 1.5x Envoy's added p50",
            fig.added_latency_ratios("sidecar-1", "envoy-1", "valid-1", "p50_us"),
            1.5,
            False,
        ),
        _Goal(
            "p99, 64 conns",
            "<= 2x Envoy's p99",
            fig.round_ratios("sidecar-1", "envoy-1", "valid-64", "p99_us"),
            2.0,
            False,
        ),
    ]


def _costs(fig: Figures) -> list[_Goal]:
    reject = "<= 0.5x an allowed call's CPU"
    return [
        _Goal(
            "rejection, no token: CPU/request",
            reject,
            fig.round_ratios("sidecar-1", "sidecar-1", "missing-64", "cpu_us_per_req", "valid-64"),
            0.5,
            False,
        ),
        _Goal(
            "rejection, bad signature: CPU/request",
            reject,
            fig.round_ratios("sidecar-1", "sidecar-1", "badsig-64", "cpu_us_per_req", "valid-64"),
            0.5,
            False,
        ),
        _Goal(
            "CPU per allowed request (64 conns)",
            "<= 1.6x Envoy's",
            fig.round_ratios("sidecar-1", "envoy-1", "valid-64", "cpu_us_per_req"),
            1.6,
            False,
        ),
    ]


def _resources(fig: Figures, results: dict[str, Any]) -> list[_Goal]:
    peaks = [max(e["hwm_kib"]) / _MIB for e in fig.rounds if e["target"].startswith("sidecar") and e["hwm_kib"]]
    stream = {(r["transfer"], r["via"]): r for r in results.get("streaming", [])}

    def share(kind: str) -> list[float]:
        direct, proxied = stream.get((kind, "direct")), stream.get((kind, "sidecar"))
        if not direct or not proxied or not direct["mib_per_s"] or not proxied["mib_per_s"]:
            return []
        return [proxied["mib_per_s"] / direct["mib_per_s"]]

    growth = [r["growth_kib"] / _MIB for r in stream.values() if "growth_kib" in r]
    floods = [r for r in results.get("flood", []) if r["bound"] is not None]
    return [
        _Goal("peak RSS per worker under load", "<= 64 MiB", peaks and [max(peaks)], 64, False, " MiB"),
        _Goal("streaming download, share of direct", ">= 0.5x", share("download"), 0.5, True),
        _Goal("streaming upload, share of direct", ">= 0.5x", share("upload"), 0.5, True),
        _Goal("streaming RSS growth (max of both)", "< 64 MiB", growth and [max(growth)], 64, False, " MiB"),
        _Goal("start to ready, 1 worker", "<= 0.5 s", fig.ready("sidecar-1"), 0.5, False, " s"),
        *[
            _Goal(
                f"key flood, {r['target']}: JWKS fetches",
                f"<= {r['bound']} in {r['seconds']:.0f} s",
                [r["jwks_fetches"]],
                r["bound"],
                False,
                "",
            )
            for r in floods
        ],
    ]


def goals_table(fig: Figures, results: dict[str, Any]) -> list[str]:
    goals = _throughput(fig, results) + _costs(fig) + _resources(fig, results)
    return [
        "Each as a ratio within a round, the median over rounds (range: the rounds' minimum to maximum).",
        "",
        "| target | goal | measured (median) | range | status |",
        "|---|---|---:|---:|---|",
        *[goal.row() for goal in goals],
    ]
