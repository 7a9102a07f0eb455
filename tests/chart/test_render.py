"""Every mode and option set renders through Helm, lints clean, and yields objects the API server would accept."""

from __future__ import annotations

import copy
from typing import Any

import helm_python as helm
import pytest

from tests.chart.cases import APP_CONTAINER, EVERYTHING, INJECT, OPTION_SETS
from tests.chart.render import POLICY, lint, render, validate, values_with

BASE = ["ConfigMap", "Deployment", "NetworkPolicy", "Service", "ServiceAccount"]  # the NetworkPolicy is on by default
MONITORING = ["PrometheusRule", "Service", "ServiceMonitor"]
EXPECTED_KINDS = {
    "gateway_defaults": BASE,
    "gateway_existing_configmap": ["Deployment", "NetworkPolicy", "Service", "ServiceAccount"],
    "gateway_ingress": [*BASE, "Ingress"],
    "gateway_tls": BASE,
    "sidecar_mode": BASE,
    "no_service_account": ["ConfigMap", "Deployment", "NetworkPolicy", "Service"],
    "pdb_max_unavailable": [*BASE, "PodDisruptionBudget"],
    "monitoring_only": [*BASE, "ConfigMap", *MONITORING],
    "ingress_only_network_policy": BASE,
    "no_network_policy_scraped": ["ConfigMap", "Deployment", "Service", "Service", "ServiceAccount", "ServiceMonitor"],
    "everything": [
        *BASE,
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "Ingress",
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
    "app_on_the_sidecar_port": (
        values_with(mode="sidecar", app={"port": 8080}, extraContainers=[APP_CONTAINER]),
        "app.port 8080 is a port of the sidecar",
    ),
    "ingress_without_hosts": (values_with(ingress={"enabled": True}), "ingress.enabled needs ingress.hosts"),
    "client_ca_without_tls": (
        values_with(tls={"clientCaSecretName": "callers-ca"}),
        "tls.clientCaSecretName (client certificates) needs tls.secretName",
    ),
    "trusted_proxies_twice": (
        values_with(policy=POLICY + "trusted_proxies: [10.0.0.0/8]\n", trustedProxies=["10.0.0.0/8"]),
        "set trusted_proxies in the policy or trustedProxies in the values, not both",
    ),
    "trusted_proxies_with_existing_configmap": (
        {"existingConfigMap": "x", "trustedProxies": ["10.0.0.0/8"]},
        "trustedProxies needs an inline policy",
    ),
    "trusted_proxies_after_a_flow_mapping": (
        values_with(policy="{version: 1, routes: []}", trustedProxies=["10.0.0.0/8"]),
        "trustedProxies can be added only to a policy that is valid YAML written as a block mapping",
    ),
    "inject_without_deployment": (
        {**INJECT, "inject": {"selector": {"app": "payroll"}}},
        "mode inject needs inject.deployment",
    ),
    "inject_without_selector": ({**INJECT, "inject": {"deployment": "payroll"}}, "mode inject needs inject.deployment"),
    "inject_with_app_containers": ({**INJECT, "extraContainers": [APP_CONTAINER]}, "leave extraContainers empty"),
    "inject_with_autoscaler": ({**INJECT, "autoscaling": {"enabled": True}}, "your Deployment's replicas, autoscaler"),
    "inject_app_on_the_admin_port": ({**INJECT, "app": {"port": 9901}}, "app.port 9901 is a port of the sidecar"),
    "patch_in_gateway_mode": (values_with(inject={"output": "patch"}), "inject.output: patch needs mode inject"),
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
