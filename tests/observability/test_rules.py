"""Alert rules and the Alertmanager example: one source, promtool-checked, each alert's firing
and silent case, runbooks, and the route that carries them.

The source is helm/kubeloop/rules/*.yaml; the chart renders it into its PrometheusRule (Helm's
``tpl``), monitoring/observability.py into the plain rules file. Whether the drift alert reaches
a real Alertmanager is test_live_stack.py.
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
ALERTS = obs.alerts(obs.plain_rules())


def _duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)(ms|s|m|h|d)", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * units[u] for n, u in parts)


def _chart(values: dict[str, Any] | None = None, **kw: str) -> list[dict[str, Any]]:
    return render({"metrics": {"prometheusRule": {"enabled": True}}, **(values or {})}, **kw)


# -- one source --------------------------------------------------------------------------------
def test_plain_rules_file_is_generated_from_the_chart_rules() -> None:
    assert obs.PLAIN_RULES.read_text() == obs.plain_rules_text(), (
        f"{obs.PLAIN_RULES.name} is stale: run `make alert-rules`"
    )


@pytest.mark.parametrize(
    "release,namespace,thresholds",
    [
        ("kubeloop", "kubeloop", {}),
        ("loop", "ml-prod", {"errorRatio": 0.01, "latencyP99Seconds": 0.25}),
    ],
)
def test_chart_and_plain_renderings_come_from_the_same_groups(
    release: str, namespace: str, thresholds: dict[str, float]
) -> None:
    objects = _chart(
        {"metrics": {"prometheusRule": {"enabled": True, **thresholds}}},
        release=release,
        namespace=namespace,
    )
    (rule,) = kinds(objects, "PrometheusRule")
    (service,) = [
        s
        for s in kinds(objects, "Service")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    ]
    values = obs.chart_defaults()
    values["metrics"]["prometheusRule"].update(thresholds)
    params = obs.rule_params(namespace, service["metadata"]["name"], values)
    assert rule["spec"]["groups"] == obs.render_rules(params)
    # Same groups, rules and alerts as the plain file; only selectors and labels differ.
    plain = obs.plain_rules()
    assert [
        (g["name"], [r.get("alert", r.get("record")) for r in g["rules"]])
        for g in rule["spec"]["groups"]
    ] == [(g["name"], [r.get("alert", r.get("record")) for r in g["rules"]]) for g in plain]
    # Every chart alert is the release's: its series are selected by the release's namespace
    # (directly or through a recording rule), or it carries the namespace as a label.
    records = {
        r["record"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r
    }
    for name, alert in obs.alerts(rule["spec"]["groups"]).items():
        expr = records.get(alert["expr"].split()[0], alert["expr"])
        assert (
            alert["labels"].get("namespace") == namespace or f'namespace="{namespace}"' in expr
        ), name
    text = yaml.safe_dump(rule["spec"]["groups"])
    for name, value in thresholds.items():
        assert f"> {value}" in text, name


def test_the_renderer_keeps_to_the_template_subset_helm_shares() -> None:
    assert (
        obs.render_template('a{ {{- .x }}b {{ "{{ $v }}" }} {{`{{ $l.m }}`}} ', {"x": 1})
        == "a{1b {{ $v }} {{ $l.m }} "
    )
    assert obs.render_template("a  {{ .x -}}\n  b", {"x": 2}) == "a  2b"
    with pytest.raises(ValueError, match="outside the template subset"):
        obs.render_template('{{ include "kubeloop.fullname" . }}', {})
    with pytest.raises(KeyError, match="errorRatioo"):
        obs.render_template("{{ .errorRatioo }}", {"errorRatio": 0.05})


def test_the_live_test_variant_differs_only_in_for() -> None:
    groups = obs.plain_rules()
    short = obs.with_short_for(groups)
    for before, after in zip(obs.alerts(groups).values(), obs.alerts(short).values(), strict=True):
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
    (rule,) = kinds(_chart(), "PrometheusRule")
    groups = rule["spec"]["groups"]
    (tmp_path / "chart.rules.yaml").write_text(obs.dump_rules(groups))
    static = {name: r.get("labels", {}) for name, r in obs.alerts(groups).items()}
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
    assert set(annotations) == {"summary", "description", "runbook"}
    assert f"docs/observability.md#{name.lower()}" in annotations["runbook"]
    assert re.search(rf"^### {name}$", DOCS.read_text(), re.M), (
        f"docs/observability.md has no runbook section for {name}"
    )


def test_rules_use_only_metrics_the_code_exports_or_they_record() -> None:
    groups = obs.plain_rules()
    recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    allowed = set(obs.exported_series()) | recorded
    used = {n for g in groups for r in g["rules"] for n in obs.metric_names(r["expr"])}
    assert used and used <= allowed, used - allowed
    assert recorded <= used, "a recording rule nothing reads"


# -- Alertmanager ------------------------------------------------------------------------------
def _alertmanager_example() -> dict[str, Any]:
    return obs.chart_defaults()["metrics"]["alertmanager"]


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
        yaml.safe_dump(obs.alertmanager_config(_alertmanager_example(), namespace="kubeloop"))
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
    assert yaml.safe_load(block.group(1)) == obs.alertmanager_config(
        _alertmanager_example(), namespace="kubeloop"
    )
