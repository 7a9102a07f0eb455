"""Sidecar mode: the sidecar is a native sidecar in the application's pod, whose pod-level settings stay its own."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.chart.cases import APP_CONTAINER, OPTION_SETS
from tests.chart.render import CHART, KUBE_VERSIONS, render, values_with


def test_the_sidecar_is_a_native_sidecar_and_the_app_runs_as_written() -> None:
    """An init container with restartPolicy Always: Kubernetes starts it before the app's containers and stops it
    after they have exited, so no call is forwarded to an application that is not (or no longer) there."""
    pod = render(OPTION_SETS["sidecar_mode"]).pod
    assert [(c["name"], c.get("restartPolicy")) for c in pod["initContainers"]] == [("sidecar", "Always")]
    assert pod["containers"] == [APP_CONTAINER]


def test_the_gateway_keeps_the_sidecar_as_its_pod_s_only_regular_container() -> None:
    pod = render(values_with()).pod
    assert "initContainers" not in pod
    assert [(c["name"], c.get("restartPolicy")) for c in pod["containers"]] == [("sidecar", None)]


def test_native_sidecars_need_kubernetes_1_29_and_the_chart_says_so() -> None:
    """Before 1.28 the API has no restartPolicy on containers, and 1.28 has it behind an alpha feature gate that is
    off by default: the chart's kubeVersion keeps it from installing there (instead of a Deployment the API server
    would refuse, or run without the ordering)."""
    deployment = render(OPTION_SETS["sidecar_mode"]).one("Deployment")
    with pytest.raises(kubernetes_validate.ValidationError, match="restartPolicy"):
        kubernetes_validate.validate(deployment, "1.27", strict=True)
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"] == ">=1.29.0-0"
    assert KUBE_VERSIONS[0] == "1.29"


def test_sidecar_mode_imposes_no_pod_level_setting_on_the_app() -> None:
    """No runAsUser/runAsNonRoot, no token or service-link switch at pod level: those would apply to the app."""
    pod = render(OPTION_SETS["sidecar_mode"]).pod
    assert not {"securityContext", "automountServiceAccountToken", "enableServiceLinks"} & pod.keys()


def test_the_app_s_pod_level_settings_come_from_its_own_values() -> None:
    pod = render(OPTION_SETS["sidecar_mode_app_pod_settings"]).pod
    assert pod["securityContext"] == {"fsGroup": 2000}
    assert (pod["automountServiceAccountToken"], pod["enableServiceLinks"]) == (True, False)
    # the sidecar's own container stays hardened, whatever the app's pod says
    security = render(OPTION_SETS["sidecar_mode_app_pod_settings"]).container()["securityContext"]
    assert (security["runAsNonRoot"], security["runAsUser"], security["readOnlyRootFilesystem"]) == (True, 10001, True)
