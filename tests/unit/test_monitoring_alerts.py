"""The loop's alert rules: valid PromQL, real metric names, and they fire when they should."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.exporter import METRIC_NAMES

RULES = (
    Path(__file__).resolve().parents[2] / "monitoring" / "alerts" / "kubeloop-monitoring.rules.yaml"
)
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def exported_families() -> set[str]:
    from serving.metrics import METRIC_NAMES as SERVER_METRICS

    families = set(METRIC_NAMES)
    for name in SERVER_METRICS:
        families |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return families


def test_rules_use_only_metrics_the_job_or_the_server_export() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    used = {
        m
        for g in groups
        for r in g["rules"]
        for m in re.findall(r"\bkubeloop_[a-z0-9_]+", r["expr"])
    }
    assert used and used <= exported_families(), used - exported_families()


def test_rules_cover_drift_quality_errors_latency_and_model_age() -> None:
    alerts = {
        r["alert"]
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert {
        "KubeloopDataDrift",
        "KubeloopModelQualityLoss",
        "KubeloopModelErrorRateHigh",
        "KubeloopPredictLatencyHigh",
        "KubeloopModelTooOld",
    } <= alerts


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    proc = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_alerts_fire_on_drift_quality_loss_canary_errors_and_age() -> None:
    tests = RULES.with_name("kubeloop-monitoring.rules_test.yaml")
    proc = subprocess.run(
        [PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
