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
from sidecar.options import ListenerTlsFiles

__all__ = ["CertificateWatcher"]


class CertificateWatcher:
    """Built before the certificate is first loaded, so that a rotation between that load and the first look at the
    files is a change it sees (a baseline taken after the load would hide it, and the old certificate would stay)."""

    def __init__(
        self, files: ListenerTlsFiles, interval: float, settle: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._tls: ListenerTls | None = None
        self._interval = interval
        paths = [files.cert, files.key] + ([files.client_ca] if files.client_ca else [])
        self._files = [SettledFile(path, max(settle, interval), clock, announce=False) for path in paths]

    def serving(self, tls: ListenerTls) -> ListenerTls:
        """The listener's TLS, loaded after this watcher took its first look: the one it reloads."""
        self._tls = tls
        return tls

    async def watch(self) -> None:
        """Runs until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            self.poll()

    def poll(self) -> bool:
        """One look at every file (each, so that each one's state moves on); reload when any holds a new version.
        Returns whether the certificate was replaced."""
        changed = [file.poll() is not None for file in self._files]
        return any(changed) and self._tls is not None and self._tls.reload("file")
