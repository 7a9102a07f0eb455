"""Interleaved rounds: each round starts every target afresh, runs its wrk scenarios, reads CPU, RSS and start-up."""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench.issuer import BenchIssuer
from bench.lab import Lab
from bench.procs import Proc, cpu_seconds, http_status, io_calls, memory_kib, system_busy_seconds
from bench.targets import ROUTE, Target
from bench.wrk import run_wrk

__all__ = ["ALLOWED", "DIRECT", "REJECTED", "Scenario", "run_rounds", "run_target"]

DIRECT: Final = "direct"  # nginx itself: the ceiling
_WARMUP_SECONDS: Final = 2
_TRIM_BYTES: Final = 16 * 2**20


@dataclass(frozen=True)
class Scenario:
    key: str  # valid-1, valid-64, missing-64, badsig-64
    token: str  # valid, missing, badsig
    connections: int
    status: int  # what every response must be


ALLOWED: Final = (Scenario("valid-1", "valid", 1, 200), Scenario("valid-64", "valid", 64, 200))
REJECTED: Final = (Scenario("missing-64", "missing", 64, 401), Scenario("badsig-64", "badsig", 64, 401))


def _scenarios(target: Target) -> tuple[Scenario, ...]:
    # The rejection path is measured where it is compared: one Envoy thread against one sidecar worker.
    return ALLOWED + REJECTED if target.threads == 1 else ALLOWED


def _tokens(issuer: BenchIssuer) -> dict[str, str | None]:
    return {"valid": issuer.valid_token(), "missing": None, "badsig": issuer.bad_signature_token()}


def _measure(lab: Lab, proc: Proc, port: int, scenario: Scenario, token: str | None, seconds: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    checked = http_status(port, ROUTE, headers)
    ours = [*proc.pids(), *lab.nginx.pids()] if proc is not lab.nginx else proc.pids()
    before, ours_before, busy_before = cpu_seconds(proc.pids()), cpu_seconds(ours), system_busy_seconds()
    io_before = io_calls(proc.pids())
    own_before, wrk_before = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(f"http://127.0.0.1:{port}{ROUTE}", scenario.connections, seconds, token, lab.run)
    cpu = cpu_seconds(proc.pids()) - before
    io_after = io_calls(proc.pids())
    known = cpu_seconds(ours) - ours_before + _rusage_delta(own_before, resource.RUSAGE_SELF)
    known += _rusage_delta(wrk_before, resource.RUSAGE_CHILDREN)
    # CPU nobody in the bench used (other work on the machine): noise worth seeing next to each row, in cores.
    other = max(0.0, system_busy_seconds() - busy_before - known) / (result.duration_us / 1e6 or 1)
    # Every response must carry the scenario's status: a 401 counts as a wrk "status error", a 200 does not.
    wrong = result.status_errors if scenario.status < 400 else result.requests - result.status_errors
    return {
        "scenario": scenario.key,
        "checked_status": checked,
        "ok": checked == scenario.status and wrong == 0 and result.socket_errors == 0,
        "wrong_status": wrong,
        "wrk": result.as_dict(),
        "cpu_s": cpu,
        "cpu_us_per_req": cpu / result.requests * 1e6 if result.requests else None,
        "other_cores": other,
        "reads_per_req": (io_after[0] - io_before[0]) / result.requests if result.requests else None,
        "writes_per_req": (io_after[1] - io_before[1]) / result.requests if result.requests else None,
    }


def _rusage_delta(before: resource.struct_rusage, who: int) -> float:
    after = resource.getrusage(who)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def run_target(
    target: Target | None, lab: Lab, seconds: float, scenarios: tuple[Scenario, ...] | None = None
) -> dict[str, Any]:
    """One target in one round: start, warm up, every scenario, peak RSS, stop (nginx, the ceiling, stays up)."""
    tokens, run = _tokens(lab.issuer), lab.run
    if target is None:
        proc, port, ready = lab.nginx, lab.ports.upstream, None
    else:
        proc, port, ready = target.start(run, lab.ports)
    try:
        run_wrk(f"http://127.0.0.1:{port}{ROUTE}", 64, _WARMUP_SECONDS, tokens["valid"], run)
        if scenarios is None:
            scenarios = ALLOWED if target is None else _scenarios(target)
        rows = [_measure(lab, proc, port, s, tokens[s.token], seconds) for s in scenarios]
        pids = proc.pids()
        memory = {"hwm_kib": [memory_kib(pid) for pid in pids], "rss_kib": [memory_kib(pid, "VmRSS") for pid in pids]}
    finally:
        if target is not None:
            proc.stop()
            for log in (run / f"{target.key}.out", run / "envoy-access.log"):
                _trim(log)
    return {"target": DIRECT if target is None else target.key, "ready_s": ready, "rows": rows, **memory}


def _trim(log: Path, keep: int = 200) -> None:
    """Access logs grow by gigabytes over a run: keep the head (start-up lines, any error) and drop the rest."""
    if log.exists() and log.stat().st_size > _TRIM_BYTES:
        with log.open("rb") as source:
            head = b"".join(line for _, line in zip(range(keep), source, strict=False))
        log.write_bytes(head + b"[trimmed by bench]\n")


def run_rounds(lab: Lab, targets: list[Target], rounds: int, seconds: float) -> list[dict[str, Any]]:
    """`rounds` rounds over the direct baseline and every target, the order rotated each round."""
    order: list[Target | None] = [None, *targets]
    results = []
    for number in range(rounds):
        shift = number % len(order)
        for target in order[shift:] + order[:shift]:
            started = time.monotonic()
            result = run_target(target, lab, seconds)
            results.append({"round": number + 1, **result})
            summary = ", ".join(f"{r['scenario']} {r['wrk']['rps']:.0f}/s" for r in result["rows"])
            print(f"bench: round {number + 1} {result['target']}: {summary} ({time.monotonic() - started:.0f} s)")
            sys.stdout.flush()
    return results
