"""Every mode and option set renders through Helm, lints clean, and yields objects the API server would accept."""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import pytest

from tests.chart.cases import EVERYTHING, OPTION_SETS
from tests.chart.render import lint, render, validate, values_with

BASE = ["ConfigMap", "Deployment", "NetworkPolicy", "Service", "ServiceAccount"]  # the NetworkPolicy is on by default
MONITORING = ["PrometheusRule", "Service", "ServiceMonitor"]
EXPECTED_KINDS = {
    "gateway_defaults": BASE,
    "gateway_existing_configmap": ["Deployment", "NetworkPolicy", "Service", "ServiceAccount"],
    "no_service_account": ["ConfigMap", "Deployment", "NetworkPolicy", "Service"],
    "pdb_max_unavailable": [*BASE, "PodDisruptionBudget"],
    "monitoring_only": [*BASE, "ConfigMap", *MONITORING],
    "ingress_only_network_policy": BASE,
    "no_network_policy_scraped": ["ConfigMap", "Deployment", "Service", "Service", "ServiceAccount", "ServiceMonitor"],
    "everything": [
        *BASE,
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        *MONITORING,
    ],
}


@pytest.mark.parametrize("values", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_every_option_set_renders_objects_valid_for_kubernetes(values: dict[str, Any]) -> None:
    rendered = render(values)
    errors = [error for obj in rendered.objects for error in validate(obj)]
    assert not errors, "\n".join(errors)
    for obj in rendered.objects:
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm", obj["kind"]


@pytest.mark.parametrize("values", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_every_option_set_passes_helm_lint_strict(values: dict[str, Any]) -> None:
    assert lint(values) == []


@pytest.mark.parametrize("name", EXPECTED_KINDS, ids=EXPECTED_KINDS.keys())
def test_each_option_set_renders_exactly_the_objects_it_asks_for(name: str) -> None:
    assert render(OPTION_SETS[name]).kinds() == sorted(EXPECTED_KINDS[name])


MISSPELT = {
    "deployment_field": ("Deployment", ["spec", "template", "spec"], "automountServiceAcountToken"),
    "container_field": ("Deployment", ["spec", "template", "spec", "containers", 0], "readinesProbe"),
    "service_monitor_field": ("ServiceMonitor", ["spec", "endpoints", 0], "intervall"),
    "prometheus_rule_field": ("PrometheusRule", ["spec", "groups", 0, "rules", 0], "expresion"),
}


@pytest.mark.parametrize(("kind", "path", "field"), MISSPELT.values(), ids=MISSPELT.keys())
def test_the_validation_catches_a_misspelt_field(kind: str, path: list[str | int], field: str) -> None:
    """The check above is not vacuous: one misspelt field in a rendered object is an error."""
    obj = copy.deepcopy(render(EVERYTHING).one(kind))
    node: Any = obj
    for key in path:
        node = node[key]
    node[field] = 1
    assert any(field in error for error in validate(obj))


REFUSED = {
    "no_policy": ({}, "no policy: set policy (inline YAML) or existingConfigMap"),
    "policy_and_existing_configmap": (values_with(existingConfigMap="x"), "either policy or existingConfigMap"),
    "roll_with_existing_configmap": (
        {"existingConfigMap": "x", "rollOnConfigChange": True},
        "rollOnConfigChange needs an inline policy",
    ),
    "sidecar_mode_without_app": (values_with(mode="sidecar"), "mode sidecar needs your application in extraContainers"),
    "scraped_but_admin_closed": (
        values_with(serviceMonitor={"enabled": True}),
        "networkPolicy.metricsFrom is empty, so only the node reaches the admin port",
    ),
    "metrics_service_but_admin_closed": (
        values_with(metricsService={"enabled": True}),
        "networkPolicy.metricsFrom is empty, so only the node reaches the admin port",
    ),
    "pdb_both_bounds": (
        values_with(podDisruptionBudget={"enabled": True, "maxUnavailable": 1}),
        "set minAvailable or maxUnavailable, not both",
    ),
}


@pytest.mark.parametrize(("values", "message"), REFUSED.values(), ids=REFUSED.keys())
def test_values_that_cannot_work_are_refused_with_a_message(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match="auth-sidecar: ") as caught:
        render(values)
    assert message in str(caught.value)
