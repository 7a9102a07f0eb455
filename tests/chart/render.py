"""The chart through Helm's own engine (helm-python-sdk: Helm v4's Go code, no binary): render, lint, validate."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import helm_python as helm
import kubernetes_validate
import yaml

from tests.chart.crds import validate_custom_resource

__all__ = [
    "CHART",
    "KUBE_VERSIONS",
    "NAMESPACE",
    "POLICY",
    "RELEASE",
    "Rendered",
    "lint",
    "render",
    "validate",
    "values_with",
]

CHART: Final = Path(__file__).resolve().parents[2] / "charts" / "auth-sidecar"
RELEASE: Final = "payments"
NAMESPACE: Final = "flows"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion: native sidecars), a current one, and the newest
# whose schemas we have.
KUBE_VERSIONS: Final = ("1.29", "1.34", "1.37")

# A policy as an operator writes it: secrets through ${VAR}, from a Secret (envFrom) or the chart's env.
POLICY: Final = """\
version: 1
realm: payments
providers:
  contoso:
    issuer: ${ISSUER}/11111111-2222-3333-4444-555555555555/v2.0
    audiences: [api://trigger-gateway]
routes:
  - name: payroll
    match: { path: /flows/payroll, methods: [POST] }
    upstream: ${PAYROLL_TRIGGER_URL}
    allow:
      - provider: contoso
        users: [aaaaaaaa-0000-0000-0000-00000000000a]
  - name: status
    match: { path_prefix: /public/, methods: [GET] }
    upstream: ${STATUS_URL}
    allow: anyone
"""


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def values_with(**values: Any) -> dict[str, Any]:
    """Values with the test policy, plus `values`."""
    return {"policy": POLICY, **values}


@dataclass(frozen=True)
class Rendered:
    """What `helm template` would print: the objects (by kind and name) and NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str

    def kinds(self) -> list[str]:
        return sorted(obj["kind"] for obj in self.objects)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [obj for obj in self.all(kind) if name is None or obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{len(found)} {kind} objects named {name}: {self.kinds()}"
        return found[0]

    @property
    def pod(self) -> dict[str, Any]:
        """The Deployment's pod spec."""
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]["spec"]
        return spec

    def container(self, name: str = "sidecar") -> dict[str, Any]:
        """A container of the pod by name: a regular one or an init container (the native sidecar of sidecar mode)."""
        every = [*self.pod.get("initContainers", []), *self.pod["containers"]]
        found: list[dict[str, Any]] = [c for c in every if c["name"] == name]
        assert len(found) == 1, name
        return found[0]


def render(values: Mapping[str, Any]) -> Rendered:
    """Render as `helm template payments charts/auth-sidecar -n flows` would (values schema included)."""
    manifests = _chart().render(dict(values), name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = [
        document
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for document in yaml.safe_load_all(text)
        if document
    ]
    return Rendered(objects, manifests.get("auth-sidecar/templates/NOTES.txt", ""))


def lint(values: Mapping[str, Any]) -> list[str]:
    """`helm lint --strict` findings at warning level or worse (info findings such as "icon is recommended" are
    advice, not defects)."""
    report = helm.lint(CHART, dict(values), strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSIONS[-1]}.0")
    findings = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return findings + list(report["errors"])


def validate(obj: Mapping[str, Any]) -> Iterator[str]:
    """Every schema error of one rendered object: built-in kinds against each Kubernetes version's strict schema
    (unknown fields are errors), the Prometheus operator's kinds against theirs."""
    if obj["apiVersion"].startswith("monitoring.coreos.com/"):
        yield from validate_custom_resource(obj)
        return
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(dict(obj), version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            yield f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}) at {path}: {exc.message}"
