"""One bounded wrk run: the token goes in a Lua script (never on a command line), the summary comes back as JSON."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

__all__ = ["WrkResult", "run_wrk"]

_MARK: Final = "BENCH_JSON "
# wrk calls done() once with the merged summary; latency figures are in microseconds.
_DONE: Final = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    "BENCH_JSON ", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_us: int
    bytes: int
    connect_errors: int
    read_errors: int
    write_errors: int
    status_errors: int  # responses that were not 2xx/3xx
    timeouts: int
    p50_us: int
    p90_us: int
    p99_us: int
    mean_us: float
    max_us: int

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rps": self.rps}


def _script(path: Path, token: str | None) -> Path:
    header = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    path.write_text(header + _DONE)
    path.chmod(0o600)
    return path


def run_wrk(url: str, connections: int, seconds: float, token: str | None, scratch: Path) -> WrkResult:
    """wrk with one thread (the proxy, not the load generator, should be what saturates) for `seconds`."""
    script = _script(scratch / "wrk-request.lua", token)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script), url]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    finally:
        script.unlink(missing_ok=True)
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            return WrkResult(**json.loads(line[len(_MARK) :]))
    raise RuntimeError(f"wrk printed no summary: {done.stdout[-500:]} {done.stderr[-500:]}")
