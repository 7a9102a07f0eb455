"""The last good policy the supervisor keeps for workers it restarts while the file on disk does not load.

The supervisor watches the file by the workers' own rule (`settled.SettledFile`: a swap at once, an in-place write
once it has settled) and keeps each version that loads. It is held in the supervisor's memory only, and a worker
inherits it through fork: the policy (and the secrets its `${VAR}` brought in) is never written to a file, a pipe
or the environment where another user could read it.
"""

from __future__ import annotations

import os

from sidecar.edge.runtime import policy_hash
from sidecar.observe.log import logger
from sidecar.ops.settled import SettledFile
from sidecar.policy.load import PolicyError, parse_policy_bytes
from sidecar.policy.model import Policy

__all__ = ["LastGood", "Loaded"]

Loaded = tuple[Policy, str]  # a validated policy and its hash (`sidecar_config_info{hash}`)


class LastGood:
    def __init__(self, path: str, loaded: Loaded, settle: float) -> None:
        self.path = path
        self.loaded = loaded  # what a restarted worker serves if the file does not load
        self._file = SettledFile(path, settle, announce=False)

    def poll(self) -> None:
        """Keep the file's policy if it holds a complete new version that loads; one that does not load changes
        nothing (the workers log its errors)."""
        data = self._file.poll()
        if data is not None:
            self._keep(data)

    def reread(self) -> None:
        """SIGHUP: the operator says the file is complete, and the secrets it names may have changed."""
        data = self._file.read_now()
        if data is not None:
            self._keep(data)

    def _keep(self, data: bytes) -> None:
        try:
            policy = parse_policy_bytes(data, self.path, os.environ)
        except PolicyError:
            return
        digest = policy_hash(data)
        changed = digest != self.loaded[1]
        self.loaded = (policy, digest)  # also unchanged bytes: a SIGHUP may have brought new secrets
        if changed:
            logger.info("policy kept for worker restarts", extra={"fields": {"policy": self.path, "hash": digest}})
