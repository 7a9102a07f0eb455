"""When the policy file holds a complete new version: swapped (at once) or changed in place and settled since.

A file that was swapped (another inode or another target behind the symlinks: an atomic rename, `mv`, the
ConfigMap `..data` swap) is complete when we see it. A file written in place (same inode: `cp`, `cat >`, an editor
that writes in place, a copy arriving in several writes) may be caught half-written, and a half file can be a
valid policy that allows more than the whole one (a rule cut before its `users:`). So it counts only once it has
settled: the same size, mtime and content at every look for `settle` seconds (at least two looks). The bytes
returned are the bytes that settled. The proxy's reloader and the supervisor's last good policy use this one rule.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import NamedTuple

from sidecar.observe.log import logger

__all__ = ["SettledFile"]


class _Seen(NamedTuple):
    """The file as one look saw it: where the symlinks led, which inode, its mtime, size and content digest."""

    target: str
    inode: int
    mtime_ns: int
    size: int
    digest: bytes
    data: bytes

    def same(self, other: _Seen | None) -> bool:
        return other is not None and self[:5] == other[:5]


class SettledFile:
    def __init__(
        self, path: str, settle: float, clock: Callable[[], float] = time.monotonic, announce: bool = True
    ) -> None:
        self.path = path
        self._announce = announce  # the workers say it; the supervisor, watching the same file, does not
        self._settle = settle
        self._clock = clock
        self._taken = self._look()  # the version last returned (at start: the file the policy came from)
        self._changing: tuple[_Seen, float] | None = None  # an in-place change, and since when it has been still

    def _look(self) -> _Seen | None:
        try:
            with open(self.path, "rb") as file:  # follows symlinks: the `..data` swap changes what we open
                stat = os.fstat(file.fileno())
                data = file.read()
        except OSError:
            return None
        digest = hashlib.sha256(data).digest()
        return _Seen(os.path.realpath(self.path), stat.st_ino, stat.st_mtime_ns, stat.st_size, digest, data)

    def poll(self) -> bytes | None:
        """One look: the file's bytes when it holds a complete version not returned before, else None."""
        seen = self._look()
        taken = self._taken
        if seen is None or seen.same(taken):
            self._changing = None  # gone (a swap in progress) or back as it was: nothing new
            return None
        if taken is None or (seen.target, seen.inode) != (taken.target, taken.inode):
            return self._take(seen)
        now = self._clock()
        if self._changing is None or not seen.same(self._changing[0]):
            if self._changing is None and self._announce:
                fields = {"policy": self.path, "settle_s": self._settle}
                logger.info("policy file changed in place; loading it once it has settled", extra={"fields": fields})
            self._changing = (seen, now)
            return None
        if now - self._changing[1] < self._settle:
            return None
        return self._take(seen)

    def read_now(self) -> bytes | None:
        """The file as it is now, taken whatever its state (SIGHUP: the operator says it is complete)."""
        seen = self._look()
        return None if seen is None else self._take(seen)

    def _take(self, seen: _Seen) -> bytes:
        self._changing = None
        self._taken = seen
        return seen.data
