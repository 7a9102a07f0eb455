"""The cost of a shared rate limit: a one-worker sidecar with the same rate-limited route, counted in its memory and
in a local Redis (redis-server on loopback, started here), interleaved; Redis's own CPU is reported beside it."""

from __future__ import annotations

import socket
import statistics
import time
from pathlib import Path
from typing import Any, Final

from bench.lab import Lab
from bench.procs import Proc, cpu_seconds, free_port
from bench.rounds import ALLOWED, run_target
from bench.targets import Target

__all__ = ["STORES", "run_ratelimit"]

STORES: Final = ("memory", "redis")


def start_redis(run: Path) -> tuple[Proc, int]:
    """redis-server with no persistence, on a free loopback port; ready once it answers PING (within 10 s)."""
    port = free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    proc = Proc.start("redis", [*argv, "--dir", str(run)], run / "redis.out")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.alive():
        if _pong(port):
            return proc, port
        time.sleep(0.02)
    proc.stop()
    raise RuntimeError(f"redis-server did not start; see {run / 'redis.out'}")


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def run_ratelimit(lab: Lab, rounds: int, seconds: float) -> dict[str, Any]:
    """Each round runs the memory and the Redis variant (order rotated) through the allowed rows."""
    redis, port = start_redis(lab.run)
    raw: list[dict[str, Any]] = []
    try:
        env = (("BENCH_REDIS", f"redis://127.0.0.1:{port}/0"),)
        for number in range(rounds):
            for store in STORES[number % 2 :] + STORES[: number % 2]:
                target = Target("sidecar", 1, policy=f"ratelimit-{store}.yaml", env=env)
                redis_before = cpu_seconds(redis.pids())
                entry = run_target(target, lab, seconds, ALLOWED)
                redis_cpu = cpu_seconds(redis.pids()) - redis_before
                requests = sum(row["wrk"]["requests"] for row in entry["rows"])
                # Over the warm-up and every row: a slight over-estimate per request (the warm-up's are not counted).
                entry["redis_cpu_us_per_req"] = redis_cpu / requests * 1e6 if requests and store == "redis" else None
                raw.append({"round": number + 1, "store": store, **entry})
                rps = ", ".join(f"{r['scenario']} {r['wrk']['rps']:.0f}/s" for r in entry["rows"])
                print(f"bench: rate-limit round {number + 1} {store}: {rps}")
    finally:
        redis.stop()
    return {"rounds": rounds, "seconds": seconds, "raw": raw, "summary": _summary(raw)}


def _summary(raw: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for store in STORES:
        for scenario in (s.key for s in ALLOWED):
            picked = [
                (entry, row)
                for entry in raw
                for row in entry["rows"]
                if entry["store"] == store and row["scenario"] == scenario
            ]
            row_out: dict[str, Any] = {"store": store, "scenario": scenario}
            row_out["ok"] = all(row["ok"] for _, row in picked)
            for name in ("rps", "p50_us", "p99_us"):
                row_out[name] = _median([row["wrk"][name] for _, row in picked])
            row_out["cpu_us_per_req"] = _median([row["cpu_us_per_req"] for _, row in picked])
            row_out["redis_cpu_us_per_req"] = _median([entry["redis_cpu_us_per_req"] for entry, _ in picked])
            rows.append(row_out)
    return rows


def _median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None
