"""Hot reload: watch the policy file (ConfigMap `..data` symlink swaps included) and reload on change or SIGHUP.

The file is polled (stat through symlinks, then a content hash): inotify misses a ConfigMap update, which swaps a
symlink in the parent directory rather than writing the file, and polling a small file every few seconds costs
nothing. A new policy is validated whole before it replaces the old one; a bad one changes nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from sidecar.log import logger
from sidecar.policy.load import PolicyError, read_policy
from sidecar.runtime import Runtime, policy_hash

__all__ = ["PolicyReloader"]

_Signature = tuple[str, int, int, int] | None


class PolicyReloader:
    def __init__(self, runtime: Runtime, path: str, environ: Mapping[str, str], interval: float = 2.0) -> None:
        self._runtime = runtime
        self._path = path
        self._environ = environ
        self._interval = interval
        self._seen = self._signature()
        self._lock = asyncio.Lock()  # a SIGHUP during a file-triggered reload waits, then reloads again

    def _signature(self) -> _Signature:
        try:
            stat = os.stat(self._path)  # follows symlinks: the `..data` swap changes the inode we see
        except OSError:
            return None
        return (os.path.realpath(self._path), stat.st_ino, stat.st_mtime_ns, stat.st_size)

    async def watch(self) -> None:
        """Runs until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            signature = self._signature()
            if signature != self._seen and signature is not None:
                self._seen = signature
                await self.reload("file", only_if_changed=True)

    async def reload(self, trigger: str, only_if_changed: bool = False) -> bool:
        """Load, validate and swap. Returns whether the policy was replaced. SIGHUP reloads even an unchanged file:
        the secrets it references through ${VAR} or ${file:...} may have changed."""
        async with self._lock:
            fields: dict[str, object] = {"trigger": trigger, "policy": self._path}
            try:
                policy, text = read_policy(self._path, self._environ)
            except PolicyError as exc:
                return self._failed(exc.errors, fields)
            digest = policy_hash(text)
            if only_if_changed and digest == self._runtime.current.hash:
                return False
            await self._runtime.swap(policy, digest)
            self._runtime.metrics.config_reloads.labels("success").inc()
            logger.info("policy reloaded", extra={"fields": {**fields, "hash": digest, "routes": len(policy.routes)}})
            return True

    def _failed(self, errors: list[str], fields: dict[str, object]) -> bool:
        self._runtime.metrics.config_reloads.labels("error").inc()
        logger.error(
            "policy reload failed; keeping the current policy",
            extra={"fields": {**fields, "errors": errors, "hash": self._runtime.current.hash}},
        )
        return False
