"""A real local Prometheus scrapes the monitoring job's figures from the textfile endpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from monitoring import exporter
from monitoring.exporter import Sample
from serving.process import free_port

PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus binary is not installed")
def test_a_local_prometheus_scrapes_the_drift_share(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    registry = exporter.build_registry(
        "building-energy",
        "V1.0.0",
        [
            Sample("kubeloop_drift_share", 0.42),
            Sample(
                "kubeloop_feature_drift_score",
                2.1,
                {"feature": "outdoor_temp_c", "method": "Wasserstein distance (normed)"},
            ),
        ],
    )
    exporter.publish(registry, "building-energy", pushgateway_url=None, job="j", folder=folder)
    server, _ = exporter.serve(folder, 0)
    target = f"127.0.0.1:{server.server_address[1]}"
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: kubeloop-monitor\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = urllib.parse.quote('kubeloop_drift_share{model="building-energy"}')
        deadline = time.monotonic() + 30
        result: list = []
        while time.monotonic() < deadline and not result:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{web}/api/v1/query?query={query}", timeout=2
                ) as r:
                    result = json.loads(r.read())["data"]["result"]
            except OSError:
                pass
            time.sleep(0.5)
        assert result, "Prometheus never scraped the monitoring figures"
        [series] = result
        assert series["metric"]["job"] == "kubeloop-monitor"
        assert series["metric"]["version"] == "V1.0.0"
        assert float(series["value"][1]) == pytest.approx(0.42)
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()
