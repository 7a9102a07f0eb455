"""Where a one-worker sidecar's CPU goes under load: py-spy (native frames too) while wrk runs, summarised by frame."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from bench.lab import Lab
from bench.targets import BENCH_DIR, ROUTE, Target

__all__ = ["run_profile", "summarise"]

_PY_SPY: Final = BENCH_DIR / ".venv" / "bin" / "py-spy"
_RATE: Final = 250
_TOP: Final = 25


def _record(lab: Lab, pid: int, port: int, seconds: float) -> Path:
    out = lab.run / "profile-sidecar-1.collapsed"
    script = lab.run / "profile.lua"
    script.write_text(f'wrk.headers["Authorization"] = "Bearer {lab.issuer.valid_token()}"\n')
    url = f"http://127.0.0.1:{port}{ROUTE}"
    load = subprocess.Popen(
        ["wrk", "-t1", "-c64", f"-d{seconds + 3:g}s", "-s", str(script), url], stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(1)  # let the pools fill before sampling
        argv = [str(_PY_SPY), "record", "--native", "-r", str(_RATE), "-d", f"{seconds:g}", "--format", "raw"]
        subprocess.run(
            [*argv, "-o", str(out), "--pid", str(pid)], capture_output=True, timeout=seconds + 60, check=True
        )
    finally:
        load.wait(timeout=seconds + 30)
        script.unlink(missing_ok=True)
    return out


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    return stack.split(";"), int(count)


def _python(frame: str) -> bool:
    return ".py:" in frame


def _function(frame: str) -> str:
    """`Forwarder._open (sidecar/proxy.py:104)` -> `Forwarder._open (sidecar/proxy.py)`: lines merged."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def _package(frame: str) -> str:
    where = frame.partition(" (")[2].rsplit(":", 1)[0]
    parts = where.split("/")
    if parts[0] == "sidecar" and len(parts) > 1:
        return "sidecar." + parts[1].removesuffix(".py")
    return parts[0].removesuffix(".py")


def summarise(collapsed: Path) -> dict[str, Any]:
    """Shares of all samples: inclusive per Python function, self per innermost Python function (native code below
    it counted with it), self per leaf frame (native included), and per package of the innermost Python frame."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    package: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        frames, count = _frames(line)
        total += count
        python = [f for f in frames if _python(f)]
        for name in {_function(f) for f in python}:
            inclusive[name] += count
        leaf[_function(frames[-1])] += count
        if python:
            own[_function(python[-1])] += count
            package[_package(python[-1])] += count

    def top(counter: Counter[str], n: int = _TOP) -> list[tuple[str, float]]:
        return [(name, 100 * c / total) for name, c in counter.most_common(n)] if total else []

    return {
        "samples": total,
        "inclusive": top(inclusive),
        "self_python": top(own),
        "self_leaf": top(leaf, 15),
        "packages": top(package, 20),
    }


def run_profile(lab: Lab, seconds: float = 10) -> dict[str, Any]:
    proc, port, _ = Target("sidecar", 1).start(lab.run, lab.ports)
    try:
        collapsed = _record(lab, proc.pid, port, seconds)
    finally:
        proc.stop()
    summary = summarise(collapsed)
    print(f"bench: profile: {summary['samples']} samples in {collapsed}")
    return {"file": str(collapsed.relative_to(BENCH_DIR.parent)), "rate_hz": _RATE, "seconds": seconds, **summary}
