"""`--workers N`: N processes share the listening sockets; metrics are summed across them (multiprocess mode).

The supervisor binds, validates the policy, then forks before any event loop or thread exists. It forwards
SIGTERM/SIGINT/SIGHUP to the workers, restarts a worker that dies unexpectedly (with the last good policy if the
file on disk does not load), and exits when all have stopped, removing the metrics files they wrote.
"""

from __future__ import annotations

import contextlib
import glob
import os
import select
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Final

import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from sidecar.edge.runtime import policy_hash
from sidecar.observe.log import logger
from sidecar.ops.last_good import LastGood, Loaded
from sidecar.options import ServeOptions
from sidecar.policy.load import PolicyError, read_policy

__all__ = ["supervise"]

_RESTART_DELAY: Final = 1.0  # the supervisor has no loop: a crash loop must not spin
_MIN_POLL: Final = 0.1  # seconds between two looks at the policy file, whatever --reload-interval says
_FORWARDED: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def supervise(options: ServeOptions, sockets: list[socket.socket], loaded: Loaded) -> int:
    directory, ours = _metrics_directory()
    last_good = LastGood(options.config, loaded, max(options.reload_settle, options.reload_interval, _MIN_POLL))
    children: set[int] = set()
    stopping: list[int] = []
    restarts: list[float] = []  # when each pending restart is due (monotonic seconds)
    hangups: list[int] = []  # SIGHUPs the loop has not yet acted on

    def forward(sig: int, _frame: FrameType | None) -> None:
        if sig != signal.SIGHUP:
            stopping.append(sig)
        else:
            hangups.append(sig)
        for pid in children:
            os.kill(pid, sig)

    def start() -> int:
        pid = _spawn(options, sockets, last_good, (wake_read, wake_write))
        children.add(pid)
        if stopping:  # the signal came while it was forked
            os.kill(pid, stopping[-1])
        return pid

    wake_read, wake_write = os.pipe()  # a signal (a worker's death included) wakes the wait at once
    try:
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)  # a handler, so that SIGCHLD reaches the pipe
        for sig in _FORWARDED:
            signal.signal(sig, forward)
        for _ in range(options.workers):
            start()
        logger.info("workers started", extra={"fields": {"workers": sorted(children), "metrics_dir": directory}})
        failed = False
        while children or (restarts and not stopping):
            for pid, code in _reaped():
                mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
                if pid not in children:
                    continue
                children.discard(pid)
                failed = failed or code != 0
                if not stopping:
                    logger.error("worker died; restarting", extra={"fields": {"pid": pid, "exit": code}})
                    restarts.append(time.monotonic() + _RESTART_DELAY)
            while restarts and restarts[0] <= time.monotonic() and not stopping:
                restarts.pop(0)
                logger.info("worker started", extra={"fields": {"pid": start(), "hash": last_good.loaded[1]}})
            if hangups:
                hangups.clear()
                last_good.reread()
            last_good.poll()
            interval = max(options.reload_interval, _MIN_POLL)
            _wait(wake_read, min(interval, restarts[0] - time.monotonic()) if restarts else interval)
    finally:
        signal.set_wakeup_fd(-1)
        os.close(wake_read)
        os.close(wake_write)
        _remove_metrics(directory, ours)
    return 1 if failed and not stopping else 0


def _reaped() -> Iterator[tuple[int, int]]:
    """(pid, exit code) of each child that has ended, without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, os.waitstatus_to_exitcode(status)


def _wait(wake: int, timeout: float) -> None:
    """Until a signal arrives or `timeout` seconds have passed."""
    select.select([wake], [], [], max(timeout, 0.0))
    with contextlib.suppress(BlockingIOError):
        while os.read(wake, 512):
            pass


def _metrics_directory() -> tuple[str, bool]:
    """PROMETHEUS_MULTIPROC_DIR (an emptyDir in Kubernetes), or a fresh private temporary directory (then True: it
    is ours to remove); emptied of old files."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = given or tempfile.mkdtemp(prefix="sidecar-metrics-")
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.remove(stale)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory, not given


def _remove_metrics(directory: str, ours: bool) -> None:
    """At stop: our temporary directory goes whole; a directory we were given (perhaps a mount point) is emptied
    of the metrics files and left in place."""
    if ours:
        shutil.rmtree(directory, ignore_errors=True)
        return
    for stale in glob.glob(os.path.join(directory, "*.db")):
        with contextlib.suppress(OSError):
            os.remove(stale)


def _spawn(options: ServeOptions, sockets: list[socket.socket], last_good: LastGood, pipe: tuple[int, int]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        signal.set_wakeup_fd(-1)  # the supervisor's: the worker's loop sets its own
        for fd in pipe:
            os.close(fd)
        for sig in (*_FORWARDED, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        code = _worker(options, sockets, last_good.loaded)
    finally:
        os._exit(code)  # never return into the supervisor's loop


def _worker(options: ServeOptions, sockets: list[socket.socket], last_good: Loaded) -> int:
    from sidecar.ops.run import run_sidecar

    # Metric values live in per-process files from here on; prometheus_client chose its value class at import.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    try:
        policy, text = read_policy(options.config)
        loaded = policy, policy_hash(text)
    except PolicyError as exc:  # the file changed since the supervisor kept the last version that loaded
        fields = {"errors": exc.errors, "hash": last_good[1]}
        logger.error("policy invalid; the worker starts with the last good policy", extra={"fields": fields})
        loaded = last_good
    run = run_sidecar(
        *loaded,
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
