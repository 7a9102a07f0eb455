"""docs/kubernetes.md: its examples render as they are, and its production checklist names real values, metrics and
alerts."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.chart.doc_snippets import KUBERNETES_DOC, snippet
from tests.chart.promql import Query
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


def loopback_ports(container: dict[str, Any]) -> set[int]:
    """The ports a container's arguments bind on 127.0.0.1 only."""
    return {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", " ".join(container.get("args", [])))}


def app_containers() -> dict[str, dict[str, Any]]:
    sidecar_mode = snippet("sidecar-values")["extraContainers"]
    inject = snippet("inject-deployment")["spec"]["template"]["spec"]["containers"]
    named = [(f"sidecar-values/{c['name']}", c) for c in sidecar_mode]
    return dict(named + [(f"inject-deployment/{c['name']}", c) for c in inject])


@pytest.mark.parametrize("container", app_containers().values(), ids=app_containers().keys())
def test_the_example_apps_on_loopback_have_probes_the_kubelet_can_run(container: dict[str, Any]) -> None:
    """The kubelet sends httpGet, tcpSocket and grpc probes to the pod IP: they never reach an app bound to
    127.0.0.1, which would then never be ready (and be restarted by its liveness probe)."""
    on_loopback = loopback_ports(container)
    assert on_loopback, "the example binds its app to loopback"
    named = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        assert probe, f"{container['name']} has no {kind}"
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in probe:
                port = probe[handler]["port"]
                assert named.get(port, port) not in on_loopback, f"{kind} {handler} on a loopback-only port"
        if "exec" in probe:
            assert any(f"127.0.0.1:{port}" in " ".join(probe["exec"]["command"]) for port in on_loopback)


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What the `restricted` Pod Security Standard refuses, per container (a container's setting, else the pod's)."""
    found = []
    pod_security = pod.get("securityContext", {})
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        security = container.get("securityContext", {})
        effective = {**pod_security, **security}
        name = container["name"]
        if effective.get("runAsNonRoot") is not True or effective.get("runAsUser") == 0:
            found.append(f"{name}: runAsNonRoot")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation")
        if "ALL" not in security.get("capabilities", {}).get("drop", []):
            found.append(f"{name}: capabilities.drop ALL")
        if set(security.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: capabilities.add")
        if effective.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile")
    return found


def test_the_sidecar_mode_example_pod_passes_the_restricted_pod_security_standard() -> None:
    assert restricted_violations(render(snippet("sidecar-values")).pod) == []
    without_app_settings = {**snippet("sidecar-values"), "app": {"port": 8081}}
    without_app_settings["extraContainers"] = [
        {k: v for k, v in c.items() if k != "securityContext"} for c in without_app_settings["extraContainers"]
    ]
    assert restricted_violations(render(without_app_settings).pod) != []  # the checker sees the difference


def test_the_chart_readme_claims_restricted_by_default_only_for_gateway_mode() -> None:
    readme = (CHART / "README.md").read_text()
    intro = readme.split("\n- [Install]", 1)[0]
    assert "`restricted`" in intro
    assert re.search(r"in gateway mode the pod passes\s+the `restricted`", intro)


def test_the_documented_service_account_token_default_is_what_the_chart_renders() -> None:
    """Sidecar mode, app.automountServiceAccountToken null: the pod says nothing, the chart's ServiceAccount says
    false, so the application gets no token, and the docs must say so."""
    rendered = render(snippet("sidecar-values"))
    assert "automountServiceAccountToken" not in rendered.pod
    assert rendered.one("ServiceAccount")["automountServiceAccountToken"] is False
    readme = (CHART / "README.md").read_text()
    row = re.search(r"^\| `app\.automountServiceAccountToken` \|.*$", readme, flags=re.MULTILINE)
    assert row and "no token" in row.group(0)
    assert "gets its token" not in readme
    assert "gets **no token**" in DOC


def test_every_prestop_sleep_action_in_the_examples_says_it_needs_kubernetes_1_30() -> None:
    """The chart supports 1.29, where the sleep action is not available by default."""
    lines = [line for line in DOC.splitlines() if re.search(r"preStop:\s*\{\s*sleep:", line)]
    assert lines
    assert [line for line in lines if "1.30" not in line] == []


def test_the_checklist_counts_live_policies_only() -> None:
    [expr] = [e for e in re.findall(r"`([^`]*sidecar_config_info[^`]*)`", CHECKLIST) if "(" in e]
    assert Query("checklist", expr).comparisons("sidecar_config_info") == [("==", 1.0)]


def test_every_documented_policy_check_in_a_pod_reads_the_new_policy_from_stdin() -> None:
    readme = (CHART / "README.md").read_text()
    commands = [
        " ".join(found.split())
        for text in (DOC, readme)
        for found in re.findall(r"kubectl[^`]*?sidecar check[^`]*", text, flags=re.DOTALL)
    ]
    assert len(commands) >= 2
    for command in commands:
        assert " exec -i " in command and "--config /dev/stdin <" in command, command


def test_the_checklist_names_the_dns_override_and_the_redis_peers() -> None:
    network = re.search(r"^- \*\*NetworkPolicy\.\*\*(.*?)(?=^- \*\*|\Z)", CHECKLIST, re.MULTILINE | re.DOTALL)
    assert network
    assert {"networkPolicy.dns", "rateLimitStore.egressTo"} <= set(VALUE_LINK.findall(network.group(1)))
