"""The last good policy the supervisor keeps for workers it restarts while the file on disk does not load.

The supervisor polls the file as the workers do and keeps each version that loads once it has settled (the same
size, mtime and inode on two polls in a row: a file caught half-written is not kept). It is held in the supervisor's
memory only, and a worker inherits it through fork: the policy (and the secrets its `${VAR}` brought in) is never
written to a file, a pipe or the environment where another user could read it.
"""

from __future__ import annotations

import os

from sidecar.log import logger
from sidecar.policy.load import PolicyError, read_policy
from sidecar.policy.model import Policy
from sidecar.runtime import policy_hash

__all__ = ["LastGood", "Loaded"]

Loaded = tuple[Policy, str]  # a validated policy and its hash (`sidecar_config_info{hash}`)
_Signature = tuple[int, int, int] | None


def _signature(path: str) -> _Signature:
    try:
        stat = os.stat(path)  # follows symlinks: a ConfigMap's `..data` swap changes the inode
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class LastGood:
    def __init__(self, path: str, loaded: Loaded) -> None:
        self.path = path
        self.loaded = loaded  # what a restarted worker serves if the file does not load
        self._kept = _signature(path)  # the file as it was when `loaded` was read
        self._settling: _Signature = None  # a changed file, seen once: kept if it is the same at the next poll

    def poll(self) -> None:
        """Keep the file's policy if it changed, has settled and loads; a file that does not load changes nothing
        (the workers log its errors)."""
        signature = _signature(self.path)
        if signature is None or signature == self._kept:
            self._settling = None
            return
        if signature != self._settling:
            self._settling = signature
            return
        self._read(signature)

    def reread(self) -> None:
        """SIGHUP: the operator says the file is complete, and the secrets it names may have changed."""
        self._read(_signature(self.path))

    def _read(self, signature: _Signature) -> None:
        try:
            policy, data = read_policy(self.path)
        except PolicyError:
            self._kept = signature
            return
        if _signature(self.path) != signature:  # written while it was read: look again at the next poll
            return
        self._kept = signature
        digest = policy_hash(data)
        changed = digest != self.loaded[1]
        self.loaded = (policy, digest)  # also unchanged bytes: a SIGHUP may have brought new secrets
        if changed:
            logger.info("policy kept for worker restarts", extra={"fields": {"policy": self.path, "hash": digest}})
