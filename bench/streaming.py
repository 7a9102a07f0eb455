"""1 GiB down and up, direct to the echo upstream and through the sidecar: throughput and the sidecar's RSS growth."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Final

from bench.lab import Lab
from bench.procs import Proc, memory_kib
from bench.targets import Target

__all__ = ["GIB", "run_streaming"]

GIB: Final = 1024**3
_MAX_SECONDS: Final = 120  # per transfer; a proxy slower than ~9 MB/s has failed anyway


def _curl(argv: list[str], stdin: Any = None) -> tuple[int, int, float]:
    """curl's status, bytes moved and total seconds (curl is the client: C, not the bottleneck)."""
    write_out = "%{http_code} %{size_download} %{size_upload} %{time_total}"
    command = ["curl", "-sS", "--max-time", str(_MAX_SECONDS), "-w", write_out, *argv]
    done = subprocess.run(command, stdin=stdin, capture_output=True, text=True, timeout=_MAX_SECONDS + 10)
    code, down, up, seconds = done.stdout.split()[-4:]
    return int(code), max(int(down), int(up)), float(seconds)


def _download(url: str, header: list[str]) -> tuple[int, int, float]:
    return _curl([*header, "-o", "/dev/null", url])


def _upload(url: str, header: list[str], run: Path) -> tuple[int, int, float]:
    """A chunked POST of GIB zero bytes from a pipe (curl -T -): the size is unknown to everyone up front."""
    answer = run / "upload-answer.json"
    source = subprocess.Popen(["head", "-c", str(GIB), "/dev/zero"], stdout=subprocess.PIPE)
    try:
        code, _, seconds = _curl([*header, "-X", "POST", "-T", "-", "-o", str(answer), url], stdin=source.stdout)
    finally:
        if source.stdout is not None:
            source.stdout.close()
        source.wait(timeout=10)
    received = json.loads(answer.read_text()).get("body_bytes", 0) if code == 200 else 0
    answer.unlink(missing_ok=True)
    return code, int(received), seconds


def _row(kind: str, via: str, result: tuple[int, int, float], proc: Proc | None, base_kib: int) -> dict[str, Any]:
    code, size, seconds = result
    row: dict[str, Any] = {"transfer": kind, "via": via, "status": code, "bytes": size, "seconds": seconds}
    row["ok"] = code == 200 and size == GIB
    row["mib_per_s"] = size / seconds / 2**20 if seconds else None
    if proc is not None:
        peak = max(memory_kib(pid) for pid in proc.pids())
        row.update(rss_before_kib=base_kib, peak_kib=peak, growth_kib=peak - base_kib)
    return row


def run_streaming(lab: Lab) -> list[dict[str, Any]]:
    """A fresh one-worker sidecar; its RSS before the transfers, and its peak (VmHWM) after each."""
    proc, port, _ = Target("sidecar", 1).start(lab.run, lab.ports)
    auth = lab.run / "auth-header"
    auth.write_text(f"Authorization: Bearer {lab.issuer.valid_token()}\n")
    auth.chmod(0o600)
    header = ["-H", f"@{auth}"]
    direct, proxied = f"http://127.0.0.1:{lab.ports.echo}", f"http://127.0.0.1:{port}"
    try:
        base = max(memory_kib(pid, "VmRSS") for pid in proc.pids())
        rows = [
            _row("download", "direct", _download(f"{direct}/stream/bytes/{GIB}", []), None, 0),
            _row("download", "sidecar", _download(f"{proxied}/stream/bytes/{GIB}", header), proc, base),
            _row("upload", "direct", _upload(f"{direct}/upload", [], lab.run), None, 0),
            _row("upload", "sidecar", _upload(f"{proxied}/upload", header, lab.run), proc, base),
        ]
    finally:
        proc.stop()
        auth.unlink(missing_ok=True)
    for row in rows:
        print(f"bench: stream {row['transfer']} {row['via']}: {row['mib_per_s'] or 0:.0f} MiB/s")
    return rows
