"""Hot reload: watch the policy file (ConfigMap `..data` symlink swaps included) and reload on change or SIGHUP.

The file is polled (stat through symlinks, then its content): inotify misses a ConfigMap update, which swaps a
symlink in the parent directory rather than writing the file, and polling a small file every few seconds costs
nothing. A new policy is validated whole before it replaces the old one; a bad one changes nothing.

Only a complete file is loaded: `settled.SettledFile` says when (a swap at once, an in-place write once it has
settled, default 5 s and at least one poll interval).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Final

from sidecar.edge.runtime import Runtime, policy_hash
from sidecar.observe.log import logger
from sidecar.ops.settled import SettledFile
from sidecar.policy.load import PolicyError, parse_policy_bytes, read_policy
from sidecar.policy.model import Policy

__all__ = ["DEFAULT_SETTLE_SECONDS", "PolicyReloader"]

DEFAULT_SETTLE_SECONDS: Final = 5.0


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
        # "settled" needs two polls that agree, whatever the values
        self._file = SettledFile(path, max(settle, interval), clock)
        self._lock = asyncio.Lock()  # a SIGHUP during a file-triggered reload waits, then reloads again

    async def watch(self) -> None:
        """Runs until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            await self.poll()

    async def poll(self) -> bool:
        """One look at the file: load it when it was swapped, or when it changed in place and has settled since.
        Returns whether the policy was replaced."""
        data = self._file.poll()
        return data is not None and await self.reload("file", only_if_changed=True, data=data)

    async def reload(self, trigger: str, only_if_changed: bool = False, data: bytes | None = None) -> bool:
        """Load, validate and swap: `data` when given (the bytes a poll saw settle), else the file as it is now.
        Returns whether the policy was replaced. SIGHUP reloads even an unchanged file: the secrets it references
        through ${VAR} or ${file:...} may have changed."""
        async with self._lock:
            fields: dict[str, object] = {"trigger": trigger, "policy": self._path}
            try:
                policy, text = read_policy(self._path, self._environ) if data is None else self._parsed(data)
            except PolicyError as exc:
                return self._failed(exc.errors, fields)
            digest = policy_hash(text)
            if only_if_changed and digest == self._runtime.current.hash:
                return False
            try:
                await self._runtime.swap(policy, digest)
            except PolicyError as exc:  # a `tls:` file that does not load: nothing was swapped
                return self._failed(exc.errors, fields)
            self._runtime.metrics.config_reloads.labels("success").inc()
            logger.info("policy reloaded", extra={"fields": {**fields, "hash": digest, "routes": len(policy.routes)}})
            return True

    def _parsed(self, data: bytes) -> tuple[Policy, bytes]:
        return parse_policy_bytes(data, self._path, self._environ), data

    def _failed(self, errors: list[str], fields: dict[str, object]) -> bool:
        self._runtime.metrics.config_reloads.labels("error").inc()
        logger.error(
            "policy reload failed; keeping the current policy",
            extra={"fields": {**fields, "errors": errors, "hash": self._runtime.current.hash}},
        )
        return False
