"""docs/kubernetes.md: its examples render as they are, and its production checklist names real values, metrics and
alerts."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.chart.doc_snippets import KUBERNETES_DOC, snippet
from tests.chart.render import CHART, render, validate, values_with

DOC = KUBERNETES_DOC.read_text()
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
CHECKLIST = DOC.split("\n## Production checklist\n", 1)[1].split("\n## ", 1)[0]
# A value named by a link to values.yaml: [`tls.secretName`](../charts/auth-sidecar/values.yaml)
VALUE_LINK = re.compile(r"\[`([A-Za-z0-9_.]+)`\]\(\.\./charts/auth-sidecar/values\.yaml\)")


def has_key(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


EXAMPLES = {
    "sidecar-values": lambda: snippet("sidecar-values"),
    "ingress-values": lambda: values_with(**snippet("ingress-values")),
    "tls-values": lambda: values_with(**snippet("tls-values")),
}


@pytest.mark.parametrize("example", EXAMPLES.values(), ids=EXAMPLES.keys())
def test_the_examples_render_objects_valid_for_kubernetes(example: Any) -> None:
    rendered = render(example())
    errors = [error for obj in rendered.objects for error in validate(obj)]
    assert not errors, "\n".join(errors)


def test_the_tls_example_uses_the_secret_the_certificate_example_makes() -> None:
    certificate = snippet("tls-certificate")
    assert certificate["spec"]["secretName"] == snippet("tls-values")["tls"]["secretName"]
    service = render(values_with(**snippet("tls-values"))).one("Service")["metadata"]["name"]
    assert f"{service}.{certificate['metadata']['namespace']}.svc" in certificate["spec"]["dnsNames"]


def test_every_value_the_document_links_is_a_key_of_values_yaml() -> None:
    linked = VALUE_LINK.findall(DOC)
    assert len(linked) > 20
    assert [key for key in linked if not has_key(DEFAULTS, key)] == []


@pytest.mark.parametrize(
    "item", ["TLS", "Replicas and limits", "NetworkPolicy", "Probes and drain", "What to alert on"]
)
def test_each_checklist_item_links_the_values_that_do_it(item: str) -> None:
    found = re.search(rf"^- \*\*{re.escape(item)}\.\*\*(.*?)(?=^- \*\*|\Z)", CHECKLIST, flags=re.MULTILINE | re.DOTALL)
    assert found, item
    assert VALUE_LINK.search(found.group(1)), f"{item}: links no value"


def test_the_alerts_and_metrics_the_checklist_names_exist() -> None:
    rule = render(values_with(prometheusRule={"enabled": True})).one("PrometheusRule")
    alerts = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    named_alerts = set(re.findall(r"`(AuthSidecar\w+)`", CHECKLIST))
    assert named_alerts == alerts  # every alert the chart ships is explained, and no other
    exported = "\n".join(p.read_text() for p in (CHART.parents[1] / "sidecar").rglob("metrics.py"))
    families = set(re.findall(r'"(sidecar_[a-z_]+)"', exported))
    named_metrics = set(re.findall(r"`(sidecar_[a-z_]+)", CHECKLIST))
    assert len(named_metrics) > 8
    assert {m for m in named_metrics if m.removesuffix("_total") not in families} == set()


def test_the_chart_readme_links_the_document() -> None:
    assert "../../docs/kubernetes.md" in (CHART / "README.md").read_text()
