"""Where a one-worker sidecar's CPU goes under load: py-spy (native frames too) while a load runs, by frame."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

from bench.lab import Lab
from bench.targets import BENCH_DIR, ROUTE, Target

__all__ = ["PROFILES", "run_profiles", "summarise"]

_PY_SPY: Final = BENCH_DIR / ".venv" / "bin" / "py-spy"
_RATE: Final = 250
_TOP: Final = 25
# name -> what the load is; each is profiled on a fresh one-worker sidecar.
PROFILES: Final = {
    "valid-64": "wrk, 64 connections, a valid token (cache hit), nginx upstream",
    "badsig-64": "wrk, 64 connections, a token with a bad signature (refused with 401)",
    "download": "curl, 2 GiB streamed down from the echo upstream",
}
_SECONDS: Final = {"valid-64": 10.0, "badsig-64": 6.0, "download": 3.0}


def _load(lab: Lab, name: str, port: int, seconds: float) -> subprocess.Popen[bytes]:
    auth = lab.run / "profile-auth"
    token = lab.issuer.bad_signature_token() if name == "badsig-64" else lab.issuer.valid_token()
    if name == "download":
        auth.write_text(f"Authorization: Bearer {token}\n")
        url = f"http://127.0.0.1:{port}/stream/bytes/{2 * 1024**3}"
        argv = ["curl", "-sS", "--max-time", "60", "-H", f"@{auth}", "-o", "/dev/null", url]
    else:
        auth.write_text(f'wrk.headers["Authorization"] = "Bearer {token}"\n')
        argv = ["wrk", "-t1", "-c64", f"-d{seconds + 3:g}s", "-s", str(auth), f"http://127.0.0.1:{port}{ROUTE}"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL)


def _record(lab: Lab, name: str, pid: int, port: int) -> Path:
    seconds = _SECONDS[name]
    out = lab.run / f"profile-{name}.collapsed"
    load = _load(lab, name, port, seconds)
    try:
        time.sleep(0.5 if name == "download" else 1)  # past connection set-up and pool filling
        argv = [str(_PY_SPY), "record", "--native", "-r", str(_RATE), "-d", f"{seconds:g}", "--format", "raw"]
        subprocess.run(
            [*argv, "-o", str(out), "--pid", str(pid)], capture_output=True, timeout=seconds + 60, check=True
        )
    finally:
        load.wait(timeout=seconds + 60)
        (lab.run / "profile-auth").unlink(missing_ok=True)
    return out


def _frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    return stack.split(";"), int(count)


def _python(frame: str) -> bool:
    return ".py:" in frame


def _function(frame: str) -> str:
    """`Forwarder._open (sidecar/edge/forward.py:104)` -> `Forwarder._open (sidecar/edge/forward.py)`: lines merged."""
    name, _, where = frame.partition(" (")
    where = where.removesuffix(")")
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
        # Frames in (nearly) every sample (the module, main, the loop's run) say nothing: left out.
        shares = [(name, 100 * c / total) for name, c in counter.most_common()] if total else []
        return [(name, share) for name, share in shares if share < 99][:n]

    return {
        "samples": total,
        "inclusive": top(inclusive),
        "self_python": top(own),
        "self_leaf": top(leaf, 15),
        "packages": top(package, 20),
    }


def run_profiles(lab: Lab) -> dict[str, dict[str, Any]]:
    profiles = {}
    for name, what in PROFILES.items():
        proc, port, _ = Target("sidecar", 1).start(lab.run, lab.ports)
        try:
            collapsed = _record(lab, name, proc.pid, port)
        finally:
            proc.stop()
        summary = summarise(collapsed)
        print(f"bench: profile {name}: {summary['samples']} samples in {collapsed}")
        file = str(collapsed.relative_to(BENCH_DIR.parent))
        profiles[name] = {"what": what, "file": file, "rate_hz": _RATE, "seconds": _SECONDS[name], **summary}
    return profiles
