"""The rendered pod and its objects: locked down, probed, mounted and wired as the sidecar needs."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
import yaml

from tests.chart.cases import APP_CONTAINER, EVERYTHING, OPTION_SETS, PROMETHEUS_PODS
from tests.chart.render import CHART, POLICY, Rendered, render, values_with


def arg(rendered: Rendered, flag: str) -> str | None:
    return next((a.partition("=")[2] for a in rendered.container()["args"] if a.partition("=")[0] == flag), None)


def env(rendered: Rendered, container: str = "sidecar") -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in rendered.container(container).get("env", [])}


def subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return small.items() <= big.items()


@pytest.mark.parametrize("values", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_the_sidecar_container_meets_the_restricted_pod_security_standard_on_its_own(values: dict[str, Any]) -> None:
    """In every mode, whatever the pod says: in sidecar mode the pod-level settings are the application's."""
    rendered = render(values)
    pod, container = rendered.pod, rendered.container()
    assert not {"hostNetwork", "hostPID", "hostIPC"} & pod.keys()
    security = container["securityContext"]
    assert (security["runAsNonRoot"], security["runAsUser"], security["runAsGroup"]) == (True, 10001, 10001)
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    for account in rendered.all("ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


GATEWAYS = {name: values for name, values in OPTION_SETS.items() if values.get("mode", "gateway") == "gateway"}


@pytest.mark.parametrize("values", GATEWAYS.values(), ids=GATEWAYS.keys())
def test_the_gateway_pod_is_locked_down_at_pod_level_too(values: dict[str, Any]) -> None:
    pod = render(values).pod
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False


def test_probes_use_the_admin_port_health_endpoints() -> None:
    container = render(values_with()).container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "admin": 9901}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}


def test_the_listeners_bind_the_container_ports() -> None:
    rendered = render(values_with(ports={"http": 8443, "admin": 9443}))
    assert (arg(rendered, "--listen"), arg(rendered, "--admin-listen")) == ("0.0.0.0:8443", "0.0.0.0:9443")
    ipv6 = render(values_with(server={"bindAddress": "::"}))
    assert arg(ipv6, "--listen") == "[::]:8080"


@pytest.mark.parametrize("values", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_the_service_carries_only_the_proxy_port_and_selects_the_pods(values: dict[str, Any]) -> None:
    rendered = render(values)
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = rendered.one("Service", "payments-auth-sidecar")
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("http", "http")]
    assert subset(service["spec"]["selector"], pod_labels)


def test_the_admin_port_is_exposed_only_by_the_metrics_service_that_the_service_monitor_selects() -> None:
    rendered = render(EVERYTHING)
    main, metrics = (
        rendered.one("Service", "payments-auth-sidecar"),
        rendered.one("Service", "payments-auth-sidecar-metrics"),
    )
    assert [(p["name"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [("admin", "admin")]
    selector = rendered.one("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert subset(selector, metrics["metadata"]["labels"]) and not subset(selector, main["metadata"]["labels"])
    assert [e["port"] for e in rendered.one("ServiceMonitor")["spec"]["endpoints"]] == ["admin"]
    assert render(values_with()).kinds().count("Service") == 1


def test_the_inline_policy_is_mounted_as_a_directory_at_the_config_path() -> None:
    rendered = render(values_with())
    configmap = rendered.one("ConfigMap", "payments-auth-sidecar")
    assert configmap["data"]["policy.yaml"] == POLICY  # byte for byte: FILE:LINE errors point into values
    volume = next(v for v in rendered.pod["volumes"] if v["name"] == "policy")
    assert volume["configMap"] == {
        "name": "payments-auth-sidecar",
        "items": [{"key": "policy.yaml", "path": "policy.yaml"}],
    }
    mount = next(m for m in rendered.container()["volumeMounts"] if m["name"] == "policy")
    # No subPath: the kubelet updates only directory mounts in place, and hot reload relies on that.
    assert mount == {"name": "policy", "mountPath": "/etc/sidecar", "readOnly": True}
    assert arg(rendered, "--config") == "/etc/sidecar/policy.yaml"


def test_an_existing_configmap_is_mounted_under_the_same_file_name() -> None:
    rendered = render(OPTION_SETS["gateway_existing_configmap"])
    volume = next(v for v in rendered.pod["volumes"] if v["name"] == "policy")
    assert volume["configMap"] == {"name": "payments-policy", "items": [{"key": "auth.yaml", "path": "policy.yaml"}]}


def test_secrets_reach_the_policy_through_the_environment_only() -> None:
    rendered = render(EVERYTHING)
    assert rendered.container()["envFrom"] == [
        {"secretRef": {"name": "trigger-urls"}},
        {"configMapRef": {"name": "shared-urls"}},
    ]
    assert env(rendered)["ISSUER"] == "https://login.microsoftonline.com"
    # Service links would add *_PORT / *_HOST variables that could shadow a ${VAR} of the policy.
    assert rendered.pod["enableServiceLinks"] is False


def test_the_pod_rolls_on_policy_change_only_when_asked() -> None:
    annotations = render(values_with(rollOnConfigChange=True)).one("Deployment")["spec"]["template"]["metadata"]
    assert annotations["annotations"]["checksum/policy"] == hashlib.sha256(POLICY.encode()).hexdigest()
    changed = render(values_with(rollOnConfigChange=True, policy=POLICY + "# edited\n")).one("Deployment")
    assert (
        changed["spec"]["template"]["metadata"]["annotations"]["checksum/policy"]
        != annotations["annotations"]["checksum/policy"]
    )
    assert "annotations" not in render(values_with()).one("Deployment")["spec"]["template"]["metadata"]


DRAIN = {
    "defaults": ({}, ("5", "25"), 35),
    "longer_drain": ({"server": {"drainDelaySeconds": 15, "graceSeconds": 60}}, ("15", "60"), 80),
    "explicit_grace_period": ({"terminationGracePeriodSeconds": 120}, ("5", "25"), 120),
}


@pytest.mark.parametrize(("values", "flags", "period"), DRAIN.values(), ids=DRAIN.keys())
def test_the_termination_grace_period_covers_the_whole_drain(
    values: dict[str, Any], flags: tuple[str, str], period: int
) -> None:
    rendered = render(values_with(**values))
    assert (arg(rendered, "--drain-delay"), arg(rendered, "--grace")) == flags
    assert rendered.pod["terminationGracePeriodSeconds"] == period > sum(int(f) for f in flags)
    # The sidecar drains by itself after SIGTERM; a `sleep` preStop would only add to the delay.
    assert "lifecycle" not in rendered.container()


def test_several_workers_get_a_writable_metrics_directory() -> None:
    rendered = render(values_with(server={"workers": 4}))
    assert arg(rendered, "--workers") == "4"
    directory = env(rendered)["PROMETHEUS_MULTIPROC_DIR"]
    mount = next(m for m in rendered.container()["volumeMounts"] if m["mountPath"] == directory)
    assert "emptyDir" in next(v for v in rendered.pod["volumes"] if v["name"] == mount["name"])
    single = render(values_with())
    assert arg(single, "--workers") is None and "PROMETHEUS_MULTIPROC_DIR" not in env(single)
    assert [v["name"] for v in single.pod["volumes"]] == ["policy"]


SERVER_FLAGS = {
    "defaults": ({}, {"--log-level": "info", "--log-format": "json", "--audit": None}),
    "audit_text_debug": (
        {"server": {"audit": True, "logFormat": "text", "logLevel": "debug"}},
        {"--log-level": "debug", "--log-format": "text", "--audit": ""},
    ),
}


@pytest.mark.parametrize(("values", "flags"), SERVER_FLAGS.values(), ids=SERVER_FLAGS.keys())
def test_server_settings_become_sidecar_flags(values: dict[str, Any], flags: dict[str, str | None]) -> None:
    rendered = render(values_with(**values))
    assert {flag: arg(rendered, flag) for flag in flags} == flags


def test_sidecar_mode_puts_the_app_behind_the_sidecar_on_loopback() -> None:
    rendered = render(values_with(mode="sidecar", app={"port": 3000}, extraContainers=[APP_CONTAINER]))
    assert [c["name"] for c in rendered.pod["containers"]] == ["app"]
    assert [c["name"] for c in rendered.pod["initContainers"]] == ["sidecar"]
    assert env(rendered)["APP_UPSTREAM"] == "http://127.0.0.1:3000"
    assert rendered.one("Service")["spec"]["ports"][0]["targetPort"] == "http"
    assert "APP_UPSTREAM" not in env(render(values_with()))


def test_the_network_policy_opens_only_the_proxy_port_and_admin_to_the_metrics_peers() -> None:
    rendered = render(OPTION_SETS["everything_sidecar_mode"])
    policy = rendered.one("NetworkPolicy")["spec"]
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert subset(policy["podSelector"]["matchLabels"], pod_labels)
    assert [[p["port"] for p in rule["ports"]] for rule in policy["ingress"]] == [["http"], ["admin"]]
    assert policy["ingress"][1]["from"] == EVERYTHING["networkPolicy"]["metricsFrom"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert {p["port"] for p in policy["egress"][0]["ports"]} == {53}  # DNS first, then the operator's rules
    ingress_only = render(OPTION_SETS["ingress_only_network_policy"]).one("NetworkPolicy")["spec"]
    assert ingress_only["policyTypes"] == ["Ingress"] and "from" not in ingress_only["ingress"][0]


def test_the_network_policy_is_on_by_default_and_closes_the_admin_port_to_other_pods() -> None:
    """Nothing but the pod's own node (the kubelet's probes: a NetworkPolicy never blocks it) reaches the admin
    port until metricsFrom names the Prometheus pods; the proxy port stays open to any peer."""
    policy = render(values_with()).one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert [([p["port"] for p in rule["ports"]], rule.get("from")) for rule in policy["ingress"]] == [(["http"], None)]
    scraped = render(values_with(networkPolicy={"metricsFrom": [PROMETHEUS_PODS]})).one("NetworkPolicy")["spec"]
    assert [([p["port"] for p in rule["ports"]], rule.get("from")) for rule in scraped["ingress"]] == [
        (["http"], None),
        (["admin"], [PROMETHEUS_PODS]),
    ]
    assert "NetworkPolicy" not in render(values_with(networkPolicy={"enabled": False})).kinds()


def test_the_readme_s_metrics_from_example_lets_prometheus_scrape() -> None:
    readme = (CHART / "README.md").read_text()
    snippet = readme.split("With the policy on, list your Prometheus there:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    values = yaml.safe_load(snippet)
    rendered = render(values_with(serviceMonitor={"enabled": True}, **values))
    admin_rule = rendered.one("NetworkPolicy")["spec"]["ingress"][1]
    assert admin_rule == {"ports": [{"port": "admin", "protocol": "TCP"}], "from": [PROMETHEUS_PODS]}


MEMORY = {
    "one_worker": ({}, ("128Mi", "256Mi")),
    "four_workers": ({"server": {"workers": 4}}, ("512Mi", "1024Mi")),
    "per_worker_amounts": (
        {"server": {"workers": 2}, "memoryPerWorkerMiB": {"request": 100, "limit": 300}},
        ("200Mi", "600Mi"),
    ),
    "explicit_memory_wins": (
        {
            "server": {"workers": 4},
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        },
        ("1Gi", "2Gi"),
    ),
}


@pytest.mark.parametrize(("values", "memory"), MEMORY.values(), ids=MEMORY.keys())
def test_memory_requests_and_limits_scale_with_the_workers(values: dict[str, Any], memory: tuple[str, str]) -> None:
    resources = render(values_with(**values)).container()["resources"]
    assert (resources["requests"]["memory"], resources["limits"]["memory"]) == memory
    assert resources["requests"]["cpu"] == values.get("resources", {}).get("requests", {}).get("cpu", "100m")


def test_autoscaling_owns_the_replica_count_and_the_budget_selects_the_pods() -> None:
    rendered = render(EVERYTHING)
    deployment = rendered.one("Deployment")
    assert "replicas" not in deployment["spec"]
    assert rendered.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    budget = rendered.one("PodDisruptionBudget")["spec"]
    assert budget["minAvailable"] == 1 and "maxUnavailable" not in budget
    assert subset(budget["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    assert render(values_with()).one("Deployment")["spec"]["replicas"] == 2


def test_the_dashboard_ships_as_a_labelled_configmap_for_the_grafana_sidecar() -> None:
    dashboard = render(EVERYTHING).one("ConfigMap", "payments-auth-sidecar-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Security"}
    shipped = json.loads((CHART / "dashboards" / "auth-sidecar.json").read_text())
    assert json.loads(dashboard["data"]["auth-sidecar.json"]) == shipped


def test_image_digest_wins_over_the_tag() -> None:
    assert render(EVERYTHING).container()["image"] == "registry.example/auth-sidecar@sha256:" + "ab" * 32
    assert render(values_with(image={"tag": "0.2.0"})).container()["image"] == "auth-sidecar:0.2.0"


def test_notes_tell_how_to_reach_check_and_monitor_the_release() -> None:
    notes = render(values_with()).notes
    assert "http://payments-auth-sidecar.flows.svc:80/" in notes
    assert "sidecar check --config /etc/sidecar/policy.yaml" in notes
    assert "hot reload" in notes and "Monitoring is off" in notes
    sidecar_notes = render(values_with(mode="sidecar", extraContainers=[APP_CONTAINER])).notes
    assert "http://127.0.0.1:8081" in sidecar_notes
