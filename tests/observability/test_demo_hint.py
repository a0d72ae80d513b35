"""What `make demo` prints at the end about dashboards, and the Prometheus command it gives:
run as printed (with free ports), it scrapes the monitoring job's figures."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from monitoring import exporter
from monitoring import observability as obs
from serving.process import free_port
from tests.observability import stack


def _settings(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(work_dir=tmp_path / "demo", metrics_path=tmp_path / "demo" / "metrics")


def test_without_prometheus_the_hint_says_where_the_dashboards_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus on it
    hint = obs.dashboard_hint(_settings(tmp_path))
    assert "helm/kubeloop/dashboards/*.json" in hint
    assert "kubeloop-monitoring.rules.yaml" in hint
    assert "apt-get install prometheus" in hint
    assert not (tmp_path / "demo" / "prometheus.yml").exists()


def test_the_printed_commands_scrape_the_demos_figures(
    tmp_path: Path, prometheus_bin: str, promtool: str
) -> None:
    import subprocess

    settings = _settings(tmp_path)
    registry = exporter.build_registry(
        "demo-model",
        "V1.0.0",
        [
            exporter.Sample("kubeloop_drift_share", 0.75),
            exporter.Sample("kubeloop_monitor_last_run_timestamp_seconds", 1.0),
        ],
    )
    exporter.publish(
        registry, "demo-model", pushgateway_url=None, job="x", folder=settings.metrics_path
    )
    ports = {k: free_port() for k in ("server", "metrics", "prometheus")}
    hint = obs.dashboard_hint(
        settings,
        server_port=ports["server"],
        metrics_port=ports["metrics"],
        prometheus_port=ports["prometheus"],
    )
    commands = [shlex.split(line.strip()) for line in hint.splitlines() if line.startswith("    ")]
    assert [c[0] for c in commands] == [sys.executable, prometheus_bin]
    config = Path(re.search(r"--config.file=(\S+)", hint).group(1))
    check = subprocess.run(
        [promtool, "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    with (
        stack.running(
            "metrics-serve", commands[0], ports["metrics"], tmp_path, ready_path="/metrics"
        ),
        stack.running("prometheus", commands[1], ports["prometheus"], tmp_path) as prom,
    ):
        prometheus = stack.Prometheus(prom.url)
        (sample,) = stack.eventually(
            lambda: prometheus.query("kubeloop_drift_share"),
            30,
            what="the demo's figures in Prometheus",
        )
        assert sample["metric"]["model"] == "demo-model"
        assert float(sample["value"][1]) == 0.75
        assert prometheus.rule_health() == []
