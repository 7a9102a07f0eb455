"""Reload the proxy listener's certificate and key when their files change (cert-manager's Secret update included).

cert-manager renews by writing a new Secret; the kubelet swaps the mounted directory's `..data` symlink, so the
certificate, key and CA change at once, and a look sees them whole. A file written in place (`cp`) may be caught
half-written, or the certificate before its key: each file counts only once it has settled (`ops/settled.py`,
the policy file's rule). Any change reloads the whole set; a set that does not load keeps the current one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sidecar.edge.tls import ListenerTls
from sidecar.ops.settled import SettledFile

__all__ = ["CertificateWatcher"]


class CertificateWatcher:
    def __init__(
        self, tls: ListenerTls, interval: float, settle: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tls = tls
        self._interval = interval
        files = tls.files
        paths = [files.cert, files.key] + ([files.client_ca] if files.client_ca else [])
        self._files = [SettledFile(path, max(settle, interval), clock, announce=False) for path in paths]

    async def watch(self) -> None:
        """Runs until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            self.poll()

    def poll(self) -> bool:
        """One look at every file (each, so that each one's state moves on); reload when any holds a new version.
        Returns whether the certificate was replaced."""
        changed = [file.poll() is not None for file in self._files]
        return any(changed) and self._tls.reload("file")
