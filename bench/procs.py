"""Processes the bench starts: start, wait for a 200 on loopback, read CPU time and memory from /proc, stop by PID."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

__all__ = [
    "Proc",
    "cpu_seconds",
    "free_port",
    "http_status",
    "io_calls",
    "memory_kib",
    "system_busy_seconds",
    "wait_status",
]

_TICK: Final = 1 / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port nothing listens on now (bound, then closed; the bench runs alone on its ports)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """A started process (and the workers it forks), its output in a file, always stopped by its own PID."""

    name: str
    popen: subprocess.Popen[bytes]
    started: float  # time.monotonic() just before exec
    _log: IO[bytes]

    @classmethod
    def start(cls, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Proc:
        out = log.open("wb")
        started = time.monotonic()
        popen = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        return cls(name, popen, started, out)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def pids(self) -> list[int]:
        """This process and its descendants (a multi-worker server forks its workers)."""
        return [self.pid, *_descendants(self.pid)]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(timeout=5)
        self._log.close()
        return code


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat_fields(int(entry))
            if stat is not None:
                children.setdefault(int(stat[1]), []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from `state` on (the command name may hold spaces and parentheses)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes, all their threads included (utime and stime of /proc/PID/stat)."""
    total = 0.0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += (int(fields[11]) + int(fields[12])) * _TICK  # stat fields 14 and 15, counted from `state` (3)
    return total


def io_calls(pids: Sequence[int]) -> tuple[int, int]:
    """Read-class and write-class system calls so far (syscr, syscw of /proc/PID/io: read/readv, write/writev),
    all threads included: how many times a proxy went to the kernel per request."""
    reads = writes = 0
    for pid in pids:
        try:
            fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        reads, writes = reads + int(fields["syscr"]), writes + int(fields["syscw"])
    return reads, writes


def system_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores: user, nice, system, irq, softirq, steal), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) * _TICK


def memory_kib(pid: int, field: str = "VmHWM") -> int:
    """A memory figure of /proc/PID/status in KiB: VmHWM is the peak resident set, VmRSS the current one."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def http_status(port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> int:
    """One GET to 127.0.0.1:port; the status, or 0 when nothing answered."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def wait_status(proc: Proc, port: int, path: str, timeout: float = 30.0, want: int = 200) -> float:
    """Seconds from the process's start until `path` answers `want` (polled every 2 ms); raises on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(port, path, timeout=1.0) == want:
            return time.monotonic() - proc.started
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before {path} answered {want}")
        time.sleep(0.002)  # a start-up probe, not synchronisation: there is no event to wait on across processes
    raise RuntimeError(f"{proc.name}: {path} did not answer {want} within {timeout}s")
