"""The limits suite's servers: a recording upstream, and a sidecar on tests/integration/limits.yaml in front of it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.recorder import Recorder
from tests.support.servers import SidecarProcess, ThreadServer

__all__ = ["LIMITS_POLICY", "Limited", "limited_sidecar"]

LIMITS_POLICY = Path(__file__).parent.parent / "integration" / "limits.yaml"


@dataclass
class Limited:
    sidecar: SidecarProcess
    recorder: Recorder

    @property
    def url(self) -> str:
        return self.sidecar.proxy


@contextmanager
def limited_sidecar(env: Mapping[str, str], policy: Path = LIMITS_POLICY) -> Iterator[Limited]:
    """`env` is the integration suite's `sidecar_env` (ISSUER, UPSTREAM); RECORDER is added here."""
    recorder = Recorder()
    upstream = ThreadServer(lambda _url: recorder)
    process = SidecarProcess(policy, {**env, "RECORDER": upstream.url})
    try:
        process.start()
        yield Limited(process, recorder)
        recorder.release()  # nothing may stay held while the servers stop
        assert process.stop() == 0
    finally:
        recorder.release()
        if process._process is not None and process._process.poll() is None:
            process.stop()
        upstream.stop()
