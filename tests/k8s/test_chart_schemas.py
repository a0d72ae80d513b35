"""Every rendered object validates against the real schemas; every PromQL expression parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.k8s.chart import (
    CHART,
    KUBE_VERSIONS,
    VALUES_FILES,
    kinds,
    render,
    render_scenario,
    scenario_id,
)
from tests.k8s.validation import (
    custom_resource_errors,
    dashboard_queries,
    kubernetes_errors,
    promtool_check,
)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("values_file", VALUES_FILES, ids=scenario_id)
def test_objects_validate_strictly_against_kubernetes(
    values_file: Path | None, version: str
) -> None:
    assert kubernetes_errors(render_scenario(values_file), version) == []


def test_kubernetes_validation_catches_an_unknown_field() -> None:
    # Guards the guard: a typo in a template must not slip through a lenient schema.
    deployment = kinds(render(), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert kubernetes_errors([deployment], "1.33")


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=scenario_id)
def test_custom_resources_validate_against_prometheus_operator_crds(
    values_file: Path | None, crd_validator: list[str]
) -> None:
    assert custom_resource_errors(render_scenario(values_file), crd_validator) == []


def test_crd_validation_catches_a_bad_service_monitor(crd_validator: list[str]) -> None:
    monitor = kinds(render({"metrics": {"serviceMonitor": {"enabled": True}}}), "ServiceMonitor")[0]
    monitor["spec"]["endpoints"][0]["interval"] = "every 30 seconds"
    errors = custom_resource_errors([monitor], crd_validator)
    assert errors and "interval" in errors[0]


def test_every_custom_resource_kind_is_covered(crd_validator: list[str]) -> None:
    all_on = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
    custom = [o for o in render(all_on) if "coreos" in o["apiVersion"]]
    assert {o["kind"] for o in custom} == {"ServiceMonitor", "PrometheusRule"}
    assert custom_resource_errors(custom, crd_validator) == []


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=scenario_id)
def test_rendered_alert_rules_pass_promtool(
    values_file: Path | None, promtool: str, tmp_path: Path
) -> None:
    for rule in kinds(render_scenario(values_file), "PrometheusRule"):
        promtool_check(promtool, rule["spec"]["groups"], tmp_path)


def test_promtool_rejects_broken_promql(promtool: str, tmp_path: Path) -> None:
    broken = [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(foo[5m])"}]}]
    with pytest.raises(AssertionError):
        promtool_check(promtool, broken, tmp_path)


@pytest.mark.parametrize(
    "dashboard", sorted((CHART / "dashboards").glob("*.json")), ids=lambda p: p.name
)
def test_dashboard_queries_pass_promtool(dashboard: Path, promtool: str, tmp_path: Path) -> None:
    queries = dashboard_queries(json.loads(dashboard.read_text()))
    assert queries, f"{dashboard.name} has no PromQL"
    rules = [{"record": f"dashboard:query_{i}:check", "expr": q} for i, q in enumerate(queries)]
    promtool_check(promtool, [{"name": dashboard.stem, "rules": rules}], tmp_path)


def test_crd_validation_catches_an_unknown_field(crd_validator: list[str]) -> None:
    # The generated validators let unknown fields through (a CRD would prune them silently);
    # the same package's TypeScript types refuse them.
    rule = kinds(render({"metrics": {"prometheusRule": {"enabled": True}}}), "PrometheusRule")[0]
    rule["spec"]["groups"][0]["rules"][0]["exprr"] = "up"
    errors = custom_resource_errors([rule], crd_validator)
    assert errors and "exprr" in errors[0]
