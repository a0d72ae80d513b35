"""Where kubeloop's dashboards and alert rules are, and how to look at the demo's figures.

One source per artefact (docs/observability.md):

- Grafana dashboards: ``helm/kubeloop/dashboards/*.json``, shipped by the chart as sidecar
  ConfigMaps and importable by hand.
- Alert rules: ``helm/kubeloop/rules/*.yaml``, Prometheus rule groups the chart renders with
  ``tpl`` into its PrometheusRule. The plain rules file
  ``monitoring/alerts/kubeloop-monitoring.rules.yaml`` for a Prometheus without the operator is
  generated from that PrometheusRule as Helm renders it (``make alert-rules``, a developer's
  step: tests/utils/alert_rules.py), never edited by hand.

The product only points at them: ``dashboard_hint`` (the end of ``make demo``) and the
Prometheus configuration it writes. What checks them (exported series, panels, rule rendering)
is test code in tests/utils.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "helm" / "kubeloop" / "dashboards"
PLAIN_RULES = REPO / "monitoring" / "alerts" / "kubeloop-monitoring.rules.yaml"
# The scrape job name of the server in the demo's Prometheus (the chart's Service name).
SERVER_JOB = "kubeloop-server"


def prometheus_config(
    server_target: str,
    metrics_target: str | None,
    rule_file: Path = PLAIN_RULES,
    interval: str = "5s",
) -> dict[str, Any]:
    """A Prometheus configuration scraping a local server and the monitoring job's metrics."""
    scrape: list[dict[str, Any]] = [
        {"job_name": SERVER_JOB, "static_configs": [{"targets": [server_target]}]}
    ]
    if metrics_target:
        scrape.append(
            {
                "job_name": "kubeloop-monitor",
                "honor_labels": True,
                "static_configs": [{"targets": [metrics_target]}],
            }
        )
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rule_file)],
        "scrape_configs": scrape,
    }


def dashboard_hint(
    settings: Any, server_port: int = 8080, metrics_port: int = 9108, prometheus_port: int = 9090
) -> str:
    """Where the dashboards and rules are and, when Prometheus is installed, how to start it
    against the demo's metrics: the monitoring figures of ``settings.metrics_path`` (served by
    ``kubeloop metrics serve``) and a server on ``server_port``.
    Writes ``<work_dir>/prometheus.yml`` for that command."""
    import shutil

    work = Path(settings.work_dir)
    metrics = Path(getattr(settings, "metrics_path", work / "metrics"))
    lines = [
        "Dashboards and alerts (docs/observability.md):",
        f"  Grafana dashboards: {DASHBOARDS.relative_to(REPO)}/*.json (Dashboards > New > "
        "Import, pick a Prometheus data source); on a cluster the chart installs them",
        f"  alert rules: {PLAIN_RULES.relative_to(REPO)} (plain Prometheus), "
        "helm/kubeloop/rules/ (the chart's PrometheusRule)",
    ]
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        lines.append(
            "  Prometheus is not installed here (Debian: apt-get install prometheus); "
            "with it, this prints a command that scrapes the demo's metrics."
        )
        return "\n".join(lines)
    config = work / "prometheus.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        yaml.safe_dump(
            prometheus_config(f"127.0.0.1:{server_port}", f"127.0.0.1:{metrics_port}"),
            sort_keys=False,
        )
    )
    python = Path(sys.executable)
    lines += [
        "  Prometheus against the demo's metrics (two terminals):",
        f"    {python} -m kubeloop metrics serve {metrics} --port {metrics_port}",
        f"    {prometheus} --config.file={config} --storage.tsdb.path={work / 'prometheus'} "
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
        f"  then http://127.0.0.1:{prometheus_port}/alerts (the rules on the demo's figures) "
        "and, as a Grafana data source, the model quality and loop dashboards; with a server "
        f"on :{server_port} (KUBELOOP_WORK_DIR={work} kubeloop serve) the serving one too.",
    ]
    return "\n".join(lines)
