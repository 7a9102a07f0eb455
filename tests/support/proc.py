"""A process's memory as the kernel reports it, for the tests that bound what an attack can grow."""

from __future__ import annotations

from pathlib import Path

__all__ = ["memory"]


def memory(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM, ...), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")
