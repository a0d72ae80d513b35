"""Alert rules and the Alertmanager example: one source, promtool-checked, each alert's firing
and silent case, runbooks, and the route that carries them.

The source is helm/kubeloop/rules/*.yaml; the chart renders it into its PrometheusRule (Helm's
``tpl``), and the plain rules file is that PrometheusRule as Helm's SDK renders it, the release
scoping taken out (tests/utils/alert_rules.py). Whether the drift alert reaches a real
Alertmanager is test_live_stack.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring import observability as obs
from tests.k8s.chart import kinds, render
from tests.utils import alert_rules, series

RULES_TEST = obs.PLAIN_RULES.with_name("kubeloop-monitoring.rules_test.yaml")
DOCS = obs.REPO / "docs" / "observability.md"
# What the issue asks to be alerted on -> the alert that does it.
REQUIRED = {
    "drift over threshold": "KubeloopDataDrift",
    "quality loss": "KubeloopModelQualityLoss",
    "error ratio": "KubeloopServerErrorRatioHigh",
    "error ratio of one model version (canary)": "KubeloopModelErrorRateHigh",
    "latency SLO": "KubeloopServerLatencyHigh",
    "prediction-log drops": "KubeloopPredictionLogDropping",
    "no model ready": "KubeloopServerNoModel",
    "model older than a set age": "KubeloopModelTooOld",
    "monitoring job not run recently": "KubeloopMonitoringStale",
}
ALERTS = alert_rules.alerts(alert_rules.plain_rules())


def _duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * units[u] for n, u in parts)


# -- one source --------------------------------------------------------------------------------
def test_plain_rules_file_is_generated_from_the_chart_rules() -> None:
    assert obs.PLAIN_RULES.read_text() == alert_rules.plain_rules_text(), (
        f"{obs.PLAIN_RULES.name} is stale: run `make alert-rules`"
    )


@pytest.mark.parametrize(
    "release,namespace,thresholds",
    [
        ("kubeloop", "kubeloop", {}),
        ("loop", "ml-prod", {"errorRatio": 0.01, "latencyP99Seconds": 0.25}),
    ],
)
def test_the_chart_scopes_the_plain_files_groups_to_its_release(
    release: str, namespace: str, thresholds: dict[str, float]
) -> None:
    groups, job = alert_rules.chart_groups(release=release, namespace=namespace, **thresholds)
    # Same groups, rules and alerts as the plain file; only selectors and labels differ.
    plain = alert_rules.plain_rules()
    assert [(g["name"], [r.get("alert", r.get("record")) for r in g["rules"]]) for g in groups] == [
        (g["name"], [r.get("alert", r.get("record")) for r in g["rules"]]) for g in plain
    ]
    # Every chart alert is the release's: its series are selected by the release's namespace
    # and server job (directly or through a recording rule), or it carries the namespace as a
    # label. The plain file selects any namespace and job.
    records = {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}
    for name, alert in alert_rules.alerts(groups).items():
        expr = records.get(alert["expr"].split()[0], alert["expr"])
        assert (
            alert["labels"].get("namespace") == namespace
            or f'namespace="{namespace}", job="{job}"' in expr
        ), name
    plain_text = yaml.safe_dump(plain)
    assert "namespace=" not in plain_text and "job=" not in plain_text
    text = yaml.safe_dump(groups)
    for name, value in thresholds.items():
        assert f"> {value}" in text, name


def test_the_live_test_variant_differs_only_in_for() -> None:
    groups = alert_rules.plain_rules()
    short = alert_rules.with_short_for(groups)
    for before, after in zip(
        alert_rules.alerts(groups).values(), alert_rules.alerts(short).values(), strict=True
    ):
        assert after.pop("for") == "1s"
        before.pop("for")
        assert before == after


# -- promtool ----------------------------------------------------------------------------------
def test_promtool_accepts_the_rules(promtool: str) -> None:
    proc = subprocess.run(
        [promtool, "check", "rules", str(obs.PLAIN_RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _chart_variant(tmp_path: Path) -> Path:
    """The unit tests, run against the chart's rendering of the release the input series
    belong to (kubeloop/kubeloop-server): loop alerts then carry the release namespace."""
    groups, _ = alert_rules.chart_groups()
    (tmp_path / "chart.rules.yaml").write_text(alert_rules.dump_rules(groups))
    static = {name: r.get("labels", {}) for name, r in alert_rules.alerts(groups).items()}
    tests = yaml.safe_load(RULES_TEST.read_text())
    tests["rule_files"] = ["chart.rules.yaml"]
    for case in (c for t in tests["tests"] for c in t["alert_rule_test"]):
        for expected in case["exp_alerts"]:
            expected["exp_labels"].update(static[case["alertname"]])
    path = tmp_path / "chart.rules_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    return path


@pytest.mark.parametrize("rendering", ["plain", "chart"])
def test_promtool_unit_tests_pass(rendering: str, promtool: str, tmp_path: Path) -> None:
    path = RULES_TEST if rendering == "plain" else _chart_variant(tmp_path)
    proc = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    cases = [
        c for t in yaml.safe_load(RULES_TEST.read_text())["tests"] for c in t["alert_rule_test"]
    ]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert fires == set(ALERTS) and silent == set(ALERTS)
    # And it fires only after its `for:`: a silent case before, a firing one after.
    for name, rule in ALERTS.items():
        wait = _duration_seconds(rule["for"])
        first_fire = min(
            _duration_seconds(c["eval_time"])
            for c in cases
            if c["alertname"] == name and c["exp_alerts"]
        )
        assert first_fire > wait, name
        assert any(
            c["alertname"] == name
            and not c["exp_alerts"]
            and _duration_seconds(c["eval_time"]) < first_fire
            for c in cases
        ), name


# -- what each alert says ----------------------------------------------------------------------
def test_the_issues_alerts_exist() -> None:
    assert set(REQUIRED.values()) <= set(ALERTS)


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_has_for_severity_and_runbook(name: str) -> None:
    rule = ALERTS[name]
    assert _duration_seconds(rule["for"]) >= 60
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook", "runbook_url"}
    assert f"docs/observability.md#{name.lower()}" in annotations["runbook"]
    # the link Alertmanager templates and Grafana show: the chart's page, the alert's section
    assert annotations["runbook_url"] == (
        f"{alert_rules.chart_defaults()['metrics']['prometheusRule']['runbookUrl']}#{name.lower()}"
    )
    assert re.search(rf"^### {name}$", DOCS.read_text(), re.M), (
        f"docs/observability.md has no runbook section for {name}"
    )


def test_rules_use_only_metrics_the_code_exports_or_they_record() -> None:
    groups = alert_rules.plain_rules()
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    allowed = set(series.exported_series()) | recorded
    used = {n for g in groups for r in g["rules"] for n in series.metric_names(r["expr"])}
    assert used and used <= allowed, used - allowed
    assert recorded <= used, "a recording rule nothing reads"


# -- Alertmanager ------------------------------------------------------------------------------
def _alertmanager_example() -> dict[str, Any]:
    return alert_rules.chart_defaults()["metrics"]["alertmanager"]


def test_the_charts_alertmanager_config_is_the_example_in_values() -> None:
    example = _alertmanager_example()
    (config,) = kinds(
        render({"metrics": {"alertmanager": {"enabled": True}}}), "AlertmanagerConfig"
    )
    spec = config["spec"]
    assert spec["route"]["receiver"] == example["receiver"]["name"]
    assert spec["route"]["matchers"] == example["route"]["matchers"]
    assert {
        k: spec["route"][k] for k in ("groupBy", "groupWait", "groupInterval", "repeatInterval")
    } == {
        k: example["route"][k] for k in ("groupBy", "groupWait", "groupInterval", "repeatInterval")
    }
    assert spec["receivers"] == [
        {
            "name": example["receiver"]["name"],
            "webhookConfigs": [
                {
                    "url": example["receiver"]["webhookUrl"],
                    "sendResolved": example["receiver"]["sendResolved"],
                }
            ],
        }
    ]
    assert kinds(render(), "AlertmanagerConfig") == []  # off by default


def test_the_alertmanager_config_validates_against_the_crd(crd_validator: list[str]) -> None:
    from tests.k8s.validation import custom_resource_errors

    objects = kinds(render({"metrics": {"alertmanager": {"enabled": True}}}), "AlertmanagerConfig")
    assert custom_resource_errors(objects, crd_validator) == []


def test_the_example_route_sends_kubeloop_alerts_of_the_namespace_to_the_webhook(
    amtool: str, tmp_path: Path
) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(
        yaml.safe_dump(
            alert_rules.alertmanager_config(_alertmanager_example(), namespace="kubeloop")
        )
    )
    check = subprocess.run(
        [amtool, "check-config", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr

    def receiver(*labels: str) -> str:
        proc = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={path}", *labels],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return proc.stdout.strip()

    webhook = _alertmanager_example()["receiver"]["name"]
    for name in ALERTS:
        assert receiver(f"alertname={name}", "namespace=kubeloop", "severity=warning") == webhook
    assert receiver("alertname=KubeloopDataDrift", "namespace=other") == "null"
    assert receiver("alertname=Watchdog", "namespace=kubeloop") == "null"


def test_the_docs_show_the_example_as_alertmanager_yml() -> None:
    block = re.search(r"<!-- alertmanager.yml.*?-->\n```yaml\n(.*?)```", DOCS.read_text(), re.S)
    assert block, "docs/observability.md lost its alertmanager.yml example"
    assert yaml.safe_load(block.group(1)) == alert_rules.alertmanager_config(
        _alertmanager_example(), namespace="kubeloop"
    )
