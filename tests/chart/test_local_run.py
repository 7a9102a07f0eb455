"""The rendered pod's sidecar container, run here exactly as rendered: the chart's wiring starts a working sidecar.

Command, args, env, envFrom and the mounted ConfigMap come from the rendered Deployment (see podrun.py for the
few mappings a local process needs); the Secrets are what the cluster would hold. The pod's security context
holds here too: the root filesystem is read-only (CI always; elsewhere when we are root).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.demo.issuer import CONTOSO_TENANT, DemoIssuer
from tests.chart.cases import APP_CONTAINER
from tests.chart.podrun import PodRun
from tests.chart.render import POLICY, render, values_with
from tests.support.servers import ThreadServer

SIG = "payroll-sas-signature-0f1e2d3c4b5a69788796a5b4"
LISA = {"aud": "api://trigger-gateway", "oid": "aaaaaaaa-0000-0000-0000-00000000000a", "sub": "lisa"}
FAST_DRAIN = {"drainDelaySeconds": 0.2, "graceSeconds": 5}
# Sidecar mode: the app is on loopback in the same pod; the chart hands its URL to the policy as APP_UPSTREAM.
SIDECAR_POLICY = POLICY.replace(
    "${PAYROLL_TRIGGER_URL}", "${APP_UPSTREAM}/workflows/payroll/triggers/manual/paths/invoke?sig=" + SIG
).replace("${STATUS_URL}", "${APP_UPSTREAM}/static")


def trigger_urls(echo: str) -> dict[str, str]:
    """The Secret an operator creates: the secret trigger URLs, never in the policy or the chart's values."""
    return {
        "PAYROLL_TRIGGER_URL": f"{echo}/workflows/payroll/triggers/manual/paths/invoke?sig={SIG}",
        "STATUS_URL": f"{echo}/static",
    }


def from_secret(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "valueFrom": {"secretKeyRef": {"name": "trigger-urls", "key": n}}} for n in names]


@dataclass(frozen=True)
class Setup:
    values: Callable[[str, str], dict[str, Any]]  # (issuer URL, echo URL) -> the operator's values
    configmaps: Callable[[str], dict[str, dict[str, str]]] = field(default=lambda _echo: {})


SETUPS = {
    "gateway_secret_through_env_from": Setup(
        lambda issuer, _echo: values_with(
            existingSecret="trigger-urls", env=[{"name": "ISSUER", "value": issuer}], server=FAST_DRAIN
        )
    ),
    "existing_configmap_and_secret_keys": Setup(
        lambda issuer, _echo: {
            "existingConfigMap": "payments-policy",
            "existingConfigMapKey": "auth.yaml",
            "env": [{"name": "ISSUER", "value": issuer}, *from_secret("PAYROLL_TRIGGER_URL", "STATUS_URL")],
            "server": FAST_DRAIN,
        },
        lambda _echo: {"payments-policy": {"auth.yaml": POLICY}},
    ),
    "sidecar_mode_app_on_loopback": Setup(
        lambda issuer, echo: values_with(
            policy=SIDECAR_POLICY,
            mode="sidecar",
            app={"port": int(echo.rpartition(":")[2])},
            extraContainers=[APP_CONTAINER],
            env=[{"name": "ISSUER", "value": issuer}],
            server=FAST_DRAIN,
        )
    ),
    "several_workers": Setup(
        lambda issuer, _echo: values_with(
            existingSecret="trigger-urls",
            env=[{"name": "ISSUER", "value": issuer}],
            server={**FAST_DRAIN, "workers": 2},
        )
    ),
}


@pytest.fixture(params=list(SETUPS.values()), ids=list(SETUPS))
def pod(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    issuer_server: tuple[DemoIssuer, ThreadServer],
    upstream: ThreadServer,
    read_only_root: bool,
) -> Iterator[PodRun]:
    setup: Setup = request.param
    rendered = render(setup.values(issuer_server[1].url, upstream.url))
    secrets = {"trigger-urls": trigger_urls(upstream.url)}
    run = PodRun(rendered, tmp_path, secrets, setup.configmaps(upstream.url), read_only_root)
    with run.running():  # the pod's end: SIGTERM, drain, exit 0 within the grace period
        yield run
    leaked = [line for line in run.lines if "eyJ" in line or SIG in line]
    assert not leaked, leaked[:3]


def test_the_rendered_pod_becomes_ready_and_guards_its_routes(
    pod: PodRun, issuer_server: tuple[DemoIssuer, ThreadServer], read_only_root: bool
) -> None:
    pod.wait_ready()
    assert pod.root_is_read_only() is read_only_root
    container = pod.container
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        http = probe["httpGet"]
        assert httpx.get(pod.url(http["port"]) + http["path"], timeout=10, trust_env=False).status_code == 200
    with httpx.Client(base_url=pod.url("http"), timeout=10, trust_env=False) as client:
        refused = client.post("/flows/payroll", content=b"{}")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer ")
        token = issuer_server[0].mint(CONTOSO_TENANT, LISA)
        allowed = client.post("/flows/payroll", content=b"{}", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200
        # The trigger URL came from the Secret through ${VAR}: its path and its signature reached the upstream.
        assert allowed.json()["path"] == "/workflows/payroll/triggers/manual/paths/invoke"
        assert f"sig={SIG}" in allowed.json()["query"]
        assert client.get("/public/hello").json()["path"] == "/static/hello"
    metrics = httpx.get(pod.url("admin") + "/metrics", timeout=10, trust_env=False).text
    assert 'sidecar_requests_total{code="200",method="POST",route="payroll"}' in metrics.replace(" 1.0", "")


EXTRA_ROUTE = """\
  - name: extra
    match: { path_prefix: /extra/, methods: [GET] }
    upstream: ${STATUS_URL}
    allow: anyone
"""


def test_a_changed_configmap_reaches_the_running_pod_without_a_restart(
    tmp_path: Path, issuer_server: tuple[DemoIssuer, ThreadServer], upstream: ThreadServer, read_only_root: bool
) -> None:
    server = {**FAST_DRAIN, "extraArgs": ["--reload-interval=0.2"]}  # polls the file 10 times a second
    values = values_with(
        existingSecret="trigger-urls", env=[{"name": "ISSUER", "value": issuer_server[1].url}], server=server
    )
    rendered = render(values)
    configmap = rendered.one("ConfigMap")["metadata"]["name"]
    pod = PodRun(rendered, tmp_path, {"trigger-urls": trigger_urls(upstream.url)}, read_only_root=read_only_root)
    with pod.running(), httpx.Client(base_url=pod.url("http"), timeout=10, trust_env=False) as client:
        pod.wait_ready()
        assert client.get("/extra/a").status_code == 404
        pod.update_configmap(configmap, {"policy.yaml": POLICY + EXTRA_ROUTE})  # `helm upgrade` with a new route
        assert pod.wait_for_log("policy reloaded", timeout=60)["trigger"] == "file"
        assert client.get("/extra/a").json()["path"] == "/static/a"
        pod.update_configmap(configmap, {"policy.yaml": POLICY + EXTRA_ROUTE + "  - name: broken\n"})
        pod.wait_for_log("policy reload failed; keeping the current policy", timeout=60)
        assert client.get("/extra/a").status_code == 200
        assert sum('"message":"listening"' in line.replace(" ", "") for line in pod.lines) == 1  # never restarted
