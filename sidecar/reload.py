"""Hot reload: watch the policy file (ConfigMap `..data` symlink swaps included) and reload on change or SIGHUP.

The file is polled (stat through symlinks, then its content): inotify misses a ConfigMap update, which swaps a
symlink in the parent directory rather than writing the file, and polling a small file every few seconds costs
nothing. A new policy is validated whole before it replaces the old one; a bad one changes nothing.

Only a complete file is loaded. A file that was swapped (another inode or another target behind the symlinks: an
atomic rename, `mv`, the ConfigMap `..data` swap) is complete when we see it, and is loaded at the next poll. A file
written in place (same inode: `cp`, `cat >`, an editor that writes in place, a copy arriving in several writes) may
be caught half-written, and a half file can be a valid policy that allows more than the whole one (a rule cut
before its `users:`). So it is loaded only once it has settled: the same size, mtime and content at every poll for
`settle` seconds (default 5, at least one poll interval). The bytes loaded are the bytes that settled.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from sidecar.log import logger
from sidecar.policy.load import PolicyError, parse_policy, read_policy
from sidecar.policy.model import Policy
from sidecar.runtime import Runtime, policy_hash

__all__ = ["DEFAULT_SETTLE_SECONDS", "PolicyReloader"]

DEFAULT_SETTLE_SECONDS: Final = 5.0


class _Seen(NamedTuple):
    """The file as one poll saw it: where the symlinks led, which inode, its mtime, size and content digest."""

    target: str
    inode: int
    mtime_ns: int
    size: int
    digest: bytes
    data: bytes

    def same(self, other: _Seen | None) -> bool:
        return other is not None and self[:5] == other[:5]


class PolicyReloader:
    def __init__(
        self,
        runtime: Runtime,
        path: str,
        environ: Mapping[str, str],
        interval: float = 2.0,
        settle: float = DEFAULT_SETTLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runtime = runtime
        self._path = path
        self._environ = environ
        self._interval = interval
        self._settle = max(settle, interval)  # "settled" needs two polls that agree, whatever the values
        self._clock = clock
        self._loaded = self._look()  # the file the running policy came from (read at start)
        self._changing: tuple[_Seen, float] | None = None  # an in-place change, and since when it has been still
        self._lock = asyncio.Lock()  # a SIGHUP during a file-triggered reload waits, then reloads again

    def _look(self) -> _Seen | None:
        try:
            with open(self._path, "rb") as file:  # follows symlinks: the `..data` swap changes what we open
                stat = os.fstat(file.fileno())
                data = file.read()
        except OSError:
            return None
        digest = hashlib.sha256(data).digest()
        return _Seen(os.path.realpath(self._path), stat.st_ino, stat.st_mtime_ns, stat.st_size, digest, data)

    async def watch(self) -> None:
        """Runs until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            await self.poll()

    async def poll(self) -> bool:
        """One look at the file: load it when it was swapped, or when it changed in place and has settled since.
        Returns whether the policy was replaced."""
        seen = self._look()
        loaded = self._loaded
        if seen is None or seen.same(loaded):
            self._changing = None  # gone (a swap in progress) or back as it was: nothing to load
            return False
        if loaded is None or (seen.target, seen.inode) != (loaded.target, loaded.inode):
            self._changing = None
            self._loaded = seen
            return await self.reload("file", only_if_changed=True, data=seen.data)
        now = self._clock()
        if self._changing is None or not seen.same(self._changing[0]):
            if self._changing is None:
                fields = {"policy": self._path, "settle_s": self._settle}
                logger.info("policy file changed in place; loading it once it has settled", extra={"fields": fields})
            self._changing = (seen, now)
            return False
        if now - self._changing[1] < self._settle:
            return False
        self._changing = None
        self._loaded = seen
        return await self.reload("file", only_if_changed=True, data=seen.data)

    async def reload(self, trigger: str, only_if_changed: bool = False, data: bytes | None = None) -> bool:
        """Load, validate and swap: `data` when given (the bytes a poll saw settle), else the file as it is now.
        Returns whether the policy was replaced. SIGHUP reloads even an unchanged file: the secrets it references
        through ${VAR} or ${file:...} may have changed."""
        async with self._lock:
            fields: dict[str, object] = {"trigger": trigger, "policy": self._path}
            try:
                policy, text = read_policy(self._path, self._environ) if data is None else self._parse(data)
            except PolicyError as exc:
                return self._failed(exc.errors, fields)
            digest = policy_hash(text)
            if only_if_changed and digest == self._runtime.current.hash:
                return False
            await self._runtime.swap(policy, digest)
            self._runtime.metrics.config_reloads.labels("success").inc()
            logger.info("policy reloaded", extra={"fields": {**fields, "hash": digest, "routes": len(policy.routes)}})
            return True

    def _parse(self, data: bytes) -> tuple[Policy, bytes]:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:  # as read_policy says it
            raise PolicyError([f"{self._path}:1: (file): the policy is not UTF-8 text"]) from exc
        return parse_policy(text, self._path, self._environ), data

    def _failed(self, errors: list[str], fields: dict[str, object]) -> bool:
        self._runtime.metrics.config_reloads.labels("error").inc()
        logger.error(
            "policy reload failed; keeping the current policy",
            extra={"fields": {**fields, "errors": errors, "hash": self._runtime.current.hash}},
        )
        return False
