"""`--workers N`: N processes share the listening sockets; metrics are summed across them (multiprocess mode).

The supervisor binds, validates the policy, then forks before any event loop or thread exists. It forwards
SIGTERM/SIGINT/SIGHUP to the workers, restarts a worker that dies unexpectedly, and exits when all have stopped.
"""

from __future__ import annotations

import glob
import os
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from types import FrameType
from typing import Final

import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from sidecar.log import logger
from sidecar.options import ServeOptions
from sidecar.policy.load import PolicyError, read_policy
from sidecar.runtime import policy_hash

__all__ = ["supervise"]

_RESTART_DELAY: Final = 1.0
_FORWARDED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def supervise(options: ServeOptions, sockets: list[socket.socket]) -> int:
    directory = _metrics_directory()
    children: set[int] = set()
    stopping: list[int] = []

    def forward(sig: int, _frame: FrameType | None) -> None:
        if sig != signal.SIGHUP:
            stopping.append(sig)
        for pid in children:
            os.kill(pid, sig)

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    for _ in range(options.workers):
        children.add(_spawn(options, sockets, directory))
    logger.info("workers started", extra={"fields": {"workers": sorted(children), "metrics_dir": directory}})
    failed = False
    while children:
        pid, status = os.wait()
        ours = pid in children
        children.discard(pid)
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        code = os.waitstatus_to_exitcode(status)
        failed = failed or code != 0
        if ours and not stopping:
            logger.error("worker died; restarting", extra={"fields": {"pid": pid, "exit": code}})
            time.sleep(_RESTART_DELAY)  # the supervisor has no loop: a crash loop must not spin
            children.add(_spawn(options, sockets, directory))
    return 1 if failed and not stopping else 0


def _metrics_directory() -> str:
    """PROMETHEUS_MULTIPROC_DIR (an emptyDir in Kubernetes), or a fresh temporary directory; emptied of old files."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="sidecar-metrics-")
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def _spawn(options: ServeOptions, sockets: list[socket.socket], directory: str) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for sig in _FORWARDED:
            signal.signal(sig, signal.SIG_DFL)
        code = _worker(options, sockets)
    finally:
        os._exit(code)  # never return into the supervisor's loop


def _worker(options: ServeOptions, sockets: list[socket.socket]) -> int:
    from sidecar.commands import run_sidecar

    # Metric values live in per-process files from here on; prometheus_client chose its value class at import.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    try:
        policy, text = read_policy(options.config)
    except PolicyError as exc:
        logger.error("policy invalid in worker", extra={"fields": {"errors": exc.errors}})
        return 1
    run = run_sidecar(
        policy,
        policy_hash(text),
        sockets[0],
        sockets[1],
        options,
        reload_from=options.config,
        exposition=_all_workers,
    )
    uvloop.run(run)
    return 0


def _all_workers(_registry: CollectorRegistry) -> Callable[[], tuple[bytes, str]]:
    def render() -> tuple[bytes, str]:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST

    return render
