"""The rendered Deployment's sidecar container, run here as a local process, as the kubelet would run it.

Taken from the rendered objects as they are: the container's command and args, its env and envFrom (Secrets and
ConfigMaps supplied as the cluster would hold them), the image's ENV from the Dockerfile, and its volumes
(ConfigMaps and Secrets laid out in a temp dir as the kubelet does, emptyDirs as tmpfs). Only what has no local
equivalent is mapped: each mountPath to its temp dir, the image's /opt/sidecar/bin to this virtualenv, and the
`0.0.0.0:<containerPort>` listeners to ephemeral loopback ports. With `readOnlyRootFilesystem`, the process runs
in a private mount namespace whose root is remounted read-only (as root, with `unshare`), so a write anywhere
but an emptyDir fails as it would in the pod.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from tests.chart.dockerfile import env_of, parse_dockerfile
from tests.chart.render import CHART, Rendered
from tests.chart.volumes import write_atomically
from tests.support.servers import LineReader

__all__ = ["PodRun", "read_only_root_available"]

_IMAGE_BIN: Final = "/opt/sidecar/bin"
# Remount / read-only, mount a tmpfs on each emptyDir, then exec the container's command.
_READ_ONLY_ROOT: Final = (
    'mount -o remount,bind,ro / || exit 97; n=$1; shift; while [ "$n" -gt 0 ]; do '
    'mount -t tmpfs -o size=64m tmpfs "$1" || exit 97; shift; n=$((n - 1)); done; exec "$@"'
)


def read_only_root_available() -> bool:
    """Whether this machine lets us make a private mount namespace with a read-only root (root and unshare)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _READ_ONLY_ROOT, "sh", "0", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@dataclass
class PodRun:
    rendered: Rendered
    workdir: Path
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    configmaps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    read_only_root: bool = True
    urls: dict[int, str] = field(default_factory=dict)  # containerPort -> http://127.0.0.1:<ephemeral>
    _mounts: dict[str, Path] = field(default_factory=dict)
    _empty_dirs: list[Path] = field(default_factory=list)
    _process: subprocess.Popen[str] | None = None
    _output: LineReader | None = None

    @property
    def container(self) -> dict[str, Any]:
        return self.rendered.container()

    def _configmap(self, name: str) -> Mapping[str, str]:
        rendered = [c["data"] for c in self.rendered.all("ConfigMap") if c["metadata"]["name"] == name]
        return rendered[0] if rendered else self.configmaps[name]

    def _volumes(self) -> Iterator[tuple[dict[str, Any], dict[str, Any], Path]]:
        """(volume, mount, local directory) for every mount of the container."""
        volumes = {v["name"]: v for v in self.rendered.pod["volumes"]}
        for mount in self.container["volumeMounts"]:
            yield volumes[mount["name"]], mount, self.workdir / mount["name"]

    def _projected(self, volume: dict[str, Any]) -> dict[str, str]:
        """The files a ConfigMap or Secret volume shows: its `items`, or every key."""
        source = volume.get("configMap") or volume["secret"]
        data = self._configmap(source["name"]) if "configMap" in volume else self.secrets[source["secretName"]]
        return {
            item["path"]: data[item["key"]] for item in source.get("items") or [{"key": k, "path": k} for k in data]
        }

    def _lay_out_volumes(self) -> None:
        for volume, mount, local in self._volumes():
            if "configMap" in volume or "secret" in volume:
                write_atomically(local, self._projected(volume))
            elif "emptyDir" in volume:
                local.mkdir(parents=True)
                self._empty_dirs.append(local)
            else:
                raise AssertionError(f"volume {mount['name']}: no local stand-in for {sorted(volume)}")
            self._mounts[mount["mountPath"]] = local

    def update_configmap(self, name: str, data: Mapping[str, str]) -> None:
        """`kubectl apply` of a changed ConfigMap, as the kubelet then delivers it to the pod's volumes."""
        self.configmaps = {**self.configmaps, name: data}
        self.rendered = Rendered(
            [o for o in self.rendered.objects if not (o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)],
            self.rendered.notes,
        )
        for volume, _, local in self._volumes():
            if volume.get("configMap", {}).get("name") == name:
                write_atomically(local, self._projected(volume))

    def send(self, sig: signal.Signals) -> None:
        assert self._process is not None
        self._process.send_signal(sig)

    def _local_path(self, value: str) -> str:
        for mount_path, local in sorted(self._mounts.items(), key=lambda item: -len(item[0])):
            if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
                return str(local) + value[len(mount_path.rstrip("/")) :]
        return value

    def _local_arg(self, argument: str) -> str:
        flag, equals, value = argument.partition("=")
        if not equals:
            return self._local_path(argument)
        host, _, port = value.rpartition(":")
        if port.isdigit() and int(port) in self._container_ports() and host:
            return f"{flag}=127.0.0.1:0"  # the pod's port: an ephemeral loopback port here
        return f"{flag}={self._local_path(value)}"

    def _container_ports(self) -> set[int]:
        return {p["containerPort"] for p in self.container["ports"]}

    def environment(self) -> dict[str, str]:
        """The image's ENV, then envFrom, then env (later wins, as in Kubernetes); mount paths mapped."""
        _, stages = parse_dockerfile(CHART.parents[1] / "Dockerfile")
        image_env = env_of(stages[-1])
        path = image_env["PATH"].replace(_IMAGE_BIN, str(Path(sys.executable).parent)).replace("$PATH", "/usr/bin:/bin")
        environ = {**image_env, "PATH": path}
        for source in self.container.get("envFrom", []):
            if "secretRef" in source:
                environ.update(self.secrets[source["secretRef"]["name"]])
            else:
                environ.update(self._configmap(source["configMapRef"]["name"]))
        for variable in self.container.get("env", []):
            if "value" in variable:
                environ[variable["name"]] = variable["value"]
            else:
                ref = variable["valueFrom"]["secretKeyRef"]
                environ[variable["name"]] = self.secrets[ref["name"]][ref["key"]]
        return {name: self._local_path(value) for name, value in environ.items()}

    def command(self) -> list[str]:
        environ = self.environment()
        executable = shutil.which(self.container["command"][0], path=environ["PATH"])
        assert executable, self.container["command"][0]
        argv = [executable, *self.container["command"][1:], *map(self._local_arg, self.container.get("args", []))]
        if not self.read_only_root:
            return argv
        assert self.container["securityContext"]["readOnlyRootFilesystem"] is True
        wrapper = ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", _READ_ONLY_ROOT, "sh"]
        return [*wrapper, str(len(self._empty_dirs)), *map(str, self._empty_dirs), *argv]

    @contextlib.contextmanager
    def running(self, timeout: float = 30.0) -> Iterator[PodRun]:
        """Start; on leaving, terminate as the kubelet would and require exit code 0 (the process never outlives
        the block, whatever happens inside it)."""
        self._lay_out_volumes()
        self._process = subprocess.Popen(
            self.command(), env=self.environment(), cwd="/", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self._process.stdout is not None
        self._output = LineReader(self._process.stdout)
        try:
            listening = self.wait_for_log("listening", timeout)
            ports = {flag: self._port_of(flag) for flag in ("--listen", "--admin-listen")}
            self.urls = {ports["--listen"]: listening["proxy"], ports["--admin-listen"]: listening["admin"]}
            yield self
        except BaseException:
            self.terminate()
            raise
        assert self.terminate() == 0, "\n".join(self.lines[-20:])

    def _port_of(self, flag: str) -> int:
        value = next(a.partition("=")[2] for a in self.container["args"] if a.partition("=")[0] == flag)
        return int(value.rpartition(":")[2])

    def url(self, port: str | int) -> str:
        """The local URL of a container port, by name (as probes name it) or number."""
        number = next((p["containerPort"] for p in self.container["ports"] if p["name"] == port), port)
        return self.urls[int(number)]

    @property
    def workers(self) -> int:
        flags = [a.partition("=")[2] for a in self.container["args"] if a.partition("=")[0] == "--workers"]
        return int(flags[0]) if flags else 1

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every worker has logged that it is ready (each answers /readyz for the pod)."""
        for _ in range(self.workers):
            self.wait_for_log("ready", timeout)

    def wait_for_log(self, message: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self._output is not None
        return _record(self._output.wait_for(lambda line: _record(line).get("message") == message, timeout))

    def root_is_read_only(self) -> bool:
        """What the running process sees mounted at / (from its own mount namespace)."""
        assert self._process is not None
        mounts = Path(f"/proc/{self._process.pid}/mounts").read_text().splitlines()
        root = [line.split() for line in mounts if line.split()[1] == "/"][-1]  # the last mount on / is in effect
        return "ro" in root[3].split(",")

    @property
    def lines(self) -> list[str]:
        return self._output.lines if self._output is not None else []

    def terminate(self) -> int:
        """SIGTERM, then as long as the kubelet would wait (terminationGracePeriodSeconds) before SIGKILL."""
        assert self._process is not None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(timeout=self.rendered.pod["terminationGracePeriodSeconds"])
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
            raise AssertionError(
                "still running after terminationGracePeriodSeconds: the kubelet would SIGKILL it"
            ) from None
        finally:
            if self._output is not None:
                self._output.join()
            if self._process.stdout is not None:
                self._process.stdout.close()
        return code


def _record(line: str) -> dict[str, Any]:
    """A JSON log line as a dict (anything else as an empty one)."""
    try:
        record = json.loads(line)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
