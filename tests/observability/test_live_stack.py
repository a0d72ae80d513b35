"""Every dashboard panel and the drift alert, against a real Prometheus, Pushgateway and
Alertmanager.

One stack for the module, all on 127.0.0.1 with free ports: the real model server (``python -m
serving``) with a champion, a challenger in shadow and a 20% canary, under a short bounded load
of drifted readings with their ground truth; the real monitoring job (``python -m monitoring``)
over that window, pushing to the Pushgateway and launching a retraining on a stand-in KFP API
server; Prometheus scraping both every second and evaluating the chart's rules (their ``for:``
shortened to 1 s, generated from the same source); Alertmanager with the chart's example route
and webhook receiver. Then every panel query, variables substituted as Grafana would, must
return data, and the drift alert must reach the webhook.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, func, select

from monitoring import observability as obs
from serving.process import free_port
from tests.observability import stack
from tests.observability.stack import Prometheus, eventually, finite
from tests.utils import alert_rules, series

pytestmark = pytest.mark.slow

NAMESPACE = "kubeloop"  # what the ServiceMonitor's target labels give the server's series
PUSHGATEWAY_NAMESPACE = "monitoring"  # kube-prometheus-stack's Pushgateway lives elsewhere
SERVER_JOB = obs.SERVER_JOB
REQUESTS = 500  # the bounded load: requests of 1-3 records
# Panels that read kube-state-metrics: no source here, their queries must still parse.
CLUSTER_PANELS = {
    (
        "kubeloop-serving",
        "Replicas and autoscaler (kube-state-metrics)",
    ): "Deployment and HorizontalPodAutoscaler state comes from kube-state-metrics",
    (
        "kubeloop-serving",
        "Autoscaler CPU target",
    ): "the HorizontalPodAutoscaler's target comes from kube-state-metrics",
}
# Grafana's built-in variables, as it would set them for a 15-minute view of a 1 s scrape.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "15m"}


@dataclass
class Loop:
    prometheus: Prometheus
    alertmanager_url: str
    received: stack.Received
    server_url: str
    kfp_runs: list[dict[str, Any]]
    monitor_output: str
    model: str
    variables: dict[str, str] = field(default_factory=dict)


def _chart_rules(folder: Path) -> Path:
    """The chart's groups for this release (namespace, server job), ``for:`` shortened."""
    groups, job = alert_rules.chart_groups(namespace=NAMESPACE)
    assert job == SERVER_JOB
    path = folder / "rules.yaml"
    path.write_text(alert_rules.dump_rules(alert_rules.with_short_for(groups)))
    return path


def _alertmanager_config(folder: Path, webhook: str) -> Path:
    """The chart's example route and receiver (values.yaml metrics.alertmanager) as the
    operator would install them: our webhook, notifications after 1 s instead of 30 s."""
    example = json.loads(json.dumps(alert_rules.chart_defaults()["metrics"]["alertmanager"]))
    example["receiver"]["webhookUrl"] = webhook
    example["route"].update(groupWait="1s", groupInterval="1s")
    return stack.write_yaml(
        folder / "alertmanager.yml", alert_rules.alertmanager_config(example, namespace=NAMESPACE)
    )


def _prometheus_config(folder: Path, server: int, pushgateway: int, alertmanager: int) -> Path:
    return stack.write_yaml(
        folder / "prometheus.yml",
        {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(_chart_rules(folder))],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": SERVER_JOB,
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{server}"], "labels": {"namespace": NAMESPACE}}
                    ],
                },
                {
                    "job_name": "pushgateway",
                    "honor_labels": True,
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{pushgateway}"],
                            "labels": {"namespace": PUSHGATEWAY_NAMESPACE},
                        }
                    ],
                },
            ],
        },
    )


def _bodies(
    frame, features: list[str], target: str, entities: list[int], count: int
) -> tuple[list[bytes], list[list[float | None]]]:
    """Prediction requests of 1-3 records: explicit (drifted) features, every fifth by entity
    id (an online feature lookup); with each record's ground truth (None for entity records)."""
    rows = frame[features].to_dict("records")
    truth = frame[target].tolist()
    bodies, actuals = [], []
    for i in range(count):
        if i % 5 == 4:
            records: list[dict[str, Any]] = [{"entity_id": entities[i % len(entities)]}]
            known: list[float | None] = [None]
        else:
            picks = [(3 * i + j) % len(rows) for j in range(1 + i % 3)]
            records = [{"features": rows[k]} for k in picks]
            known = [truth[k] for k in picks]
        bodies.append(orjson.dumps({"records": records}))
        actuals.append(known)
    return bodies, actuals


def _post_feedback(
    url: str, responses: list[tuple[int, bytes]], actuals: list[list[float | None]]
) -> int:
    """Ground truth for every answered record whose actual value we know."""
    items = []
    for (status, body), known in zip(responses, actuals, strict=True):
        if status != 200:
            continue
        for prediction, actual in zip(orjson.loads(body)["predictions"], known, strict=True):
            if actual is not None:
                items.append({"request_id": prediction["request_id"], "actual": actual})
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(items), 200):
            answer = client.post("/feedback", json=items[start : start + 200])
            assert answer.status_code == 200, answer.text
    return len(items)


def _trickle(url: str, bodies: list[bytes], stop: threading.Event) -> None:
    """A few requests per second until ``stop``, so rates stay above zero while we query."""
    with httpx.Client(base_url=url, timeout=10) as client:
        i = 0
        while not stop.wait(0.2):
            client.post(
                "/predict",
                content=bodies[i % len(bodies)],
                headers={"Content-Type": "application/json"},
            )
            i += 1


def _logged_rows(db: Path) -> int:
    """Rows answered (champion and canary) in the prediction log."""
    from kubeloop.log_store import predictions

    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return (
                conn.scalar(
                    select(func.count())
                    .select_from(predictions)
                    .where(predictions.c.role != "shadow")
                )
                or 0
            )
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def loop(
    tmp_path_factory: pytest.TempPathFactory,
    mlflow_db_template: Path,
    prometheus_bin: str,
    pushgateway_bin: str,
    alertmanager_bin: str,
) -> Iterator[Loop]:
    from kubeloop.engineering import feature_frame
    from kubeloop.sample_data import GeneratorConfig, generate
    from serving.process import ServerProcess
    from tests.utils.serving import post_many, seed_example

    root = tmp_path_factory.mktemp("observability")
    # Seeded by a process of its own, as a pipeline's features step fills the online store:
    # sqlite3's adapters are process-wide, and a suite's earlier tests may have replaced
    # Feast's in this one (the server then failed to read the timestamps back).
    seed = f"seed_example(Path({str(root / 'seed')!r}), rows=1_500, buildings=30, "
    seed += f"mlflow_template=Path({str(mlflow_db_template)!r}))"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from pathlib import Path\nfrom tests.utils.serving import seed_example\n" + seed,
        ],
        cwd=obs.REPO,
        check=True,
        timeout=600,
    )
    seeded = seed_example(root / "seed")  # reads what the seeding process wrote
    spec = seeded.spec()
    log_db = root / "predictions.db"
    ports = {name: free_port() for name in ("prometheus", "pushgateway", "alertmanager")}
    server_env = {
        "KUBELOOP_WORK_DIR": str(seeded.work_dir),
        "KUBELOOP_SPEC": str(seeded.spec_path),
        "MLFLOW_TRACKING_URI": seeded.tracking_uri,
        "KUBELOOP_PREDICTION_LOG_URL": f"sqlite:///{log_db}",
        "KUBELOOP_SHADOW_ENABLED": "true",
        "KUBELOOP_CANARY_WEIGHT": "0.2",
        "KUBELOOP_LOG_FLUSH_SECONDS": "0.1",
    }
    stop = threading.Event()
    with (
        stack.webhook_receiver() as (webhook, received),
        stack.kfp_api() as (kfp_url, kfp_runs),
        stack.running(
            "pushgateway",
            stack.pushgateway_argv(pushgateway_bin, ports["pushgateway"]),
            ports["pushgateway"],
            root,
        ),
        stack.running(
            "alertmanager",
            stack.alertmanager_argv(
                alertmanager_bin,
                _alertmanager_config(root, webhook),
                root / "am-data",
                ports["alertmanager"],
            ),
            ports["alertmanager"],
            root,
        ) as alertmanager,
        ServerProcess(server_env, log_path=root / "server.log") as server,
        stack.running(
            "prometheus",
            stack.prometheus_argv(
                prometheus_bin,
                _prometheus_config(root, server.port, ports["pushgateway"], ports["alertmanager"]),
                root / "prom-data",
                ports["prometheus"],
            ),
            ports["prometheus"],
            root,
        ) as prom,
    ):
        # The bounded load: drifted readings (the generator's "both" drift), with ground truth.
        raw = generate(GeneratorConfig(rows=600, seed=11, buildings=30, drift="both", strength=1.0))
        frame = feature_frame(raw, spec)
        features = [
            c for c in frame.columns if c not in (spec.entity_key, spec.timestamp, spec.target)
        ]
        bodies, actuals = _bodies(frame, features, spec.target, seeded.entities, REQUESTS)
        responses = asyncio.run(post_many(server.url, "/predict", bodies, concurrency=8))
        refused = [(s, body[:400]) for s, body in responses if s != 200]
        assert refused == [], f"{len(refused)} of {len(responses)} refused: {refused[:3]}"
        labelled = _post_feedback(server.url, responses, actuals)
        trickle = threading.Thread(target=_trickle, args=(server.url, bodies, stop), daemon=True)
        trickle.start()
        rows = sum(len(orjson.loads(b)["records"]) for b in bodies)
        eventually(lambda: _logged_rows(log_db) >= rows, 30, what="prediction log flushed")

        # The monitoring job, as the CronJob runs it, launching on the cluster launcher.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KUBELOOP_", "MLFLOW_", "PROMETHEUS_MULTIPROC"))
        }
        env.update(
            {
                "KUBELOOP_WORK_DIR": str(seeded.work_dir),
                "KUBELOOP_SPEC": str(seeded.spec_path),
                "MLFLOW_TRACKING_URI": seeded.tracking_uri,
                "KUBELOOP_PREDICTION_LOG_URL": f"sqlite:///{log_db}",
                "KUBELOOP_PUSHGATEWAY_URL": f"http://127.0.0.1:{ports['pushgateway']}",
                "KUBELOOP_LAUNCHER": "kfp",
                "KUBELOOP_KFP_HOST": kfp_url,
                "KUBELOOP_REPORTS_DIR": str(root / "reports"),
            }
        )
        job = subprocess.run(
            [sys.executable, "-m", "monitoring"],
            cwd=obs.REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert job.returncode == 0, job.stdout + job.stderr
        assert labelled > 0
        prometheus = Prometheus(prom.url)
        eventually(
            lambda: prometheus.query("kubeloop_retrain_launched == 1"),
            20,
            what="the monitoring job's figures scraped from the Pushgateway",
        )
        try:
            yield Loop(
                prometheus,
                alertmanager.url,
                received,
                server.url,
                kfp_runs,
                job.stdout + job.stderr,
                spec.model_name,
            )
        finally:
            stop.set()
            trickle.join(5)


def _variables(loop: Loop, dashboard: dict[str, Any]) -> dict[str, str]:
    """Each query variable resolved as Grafana does: its label_values() query against
    Prometheus, in order (later ones may use earlier ones), first value chosen."""
    values = dict(BUILTINS)
    for name, query in series.variable_queries(dashboard).items():
        query = series.substitute(query, values)
        selector, label = series.label_values(query)
        found = loop.prometheus.label_values(label, selector)
        assert found, f"{dashboard['uid']}: variable ${name} has no values ({query})"
        values[name] = sorted(found)[0]
    return values


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return series.load_dashboards()


def test_dashboard_variables_resolve_to_the_stack(loop: Loop, dashboards) -> None:
    for dashboard in dashboards.values():
        values = _variables(loop, dashboard)
        assert values.get("namespace", NAMESPACE) == NAMESPACE
        assert values.get("job", SERVER_JOB) == SERVER_JOB
        assert values.get("model", loop.model) == loop.model


def test_every_panel_query_returns_data(loop: Loop, dashboards) -> None:
    """Every panel but the cluster's, and but a classifier's: the stack serves a regression
    model, so a classifier's panels (live accuracy, classes) must parse and return nothing."""
    empty, checked, classifier_panels = [], 0, 0
    classifier_only = series.task_series("classification")
    for dashboard in dashboards.values():
        values = _variables(loop, dashboard)
        for panel in series.panels(dashboard):
            if (dashboard["uid"], panel["title"]) in CLUSTER_PANELS:
                continue
            for target in panel["targets"]:
                expr = series.substitute(target["expr"], values)
                if series.metric_names(target["expr"]) <= classifier_only:
                    assert not finite(loop.prometheus.query(expr)), expr
                    classifier_panels += 1
                    continue
                checked += 1
                if not finite(loop.prometheus.query(expr)):
                    empty.append(
                        f"{dashboard['uid']} / {panel['title']} / {target['refId']}: {expr}"
                    )
    assert checked > 50 and classifier_panels >= 5
    assert empty == [], "panel queries without data:\n" + "\n".join(empty)


def test_cluster_only_panels_are_marked_and_parse(loop: Loop, dashboards) -> None:
    found = set()
    for dashboard in dashboards.values():
        values = _variables(loop, dashboard)
        for panel in series.panels(dashboard):
            names = {n for t in panel["targets"] for n in series.metric_names(t["expr"])}
            if not names & series.CLUSTER_SERIES:
                continue
            found.add((dashboard["uid"], panel["title"]))
            assert names <= series.CLUSTER_SERIES, f"{panel['title']} mixes sources: {names}"
            assert panel["description"].startswith("Needs a cluster with kube-state-metrics")
            for target in panel["targets"]:
                loop.prometheus.query(series.substitute(target["expr"], values))  # raises if bad
    assert found == set(CLUSTER_PANELS)


def test_rules_evaluate_without_errors(loop: Loop) -> None:
    assert loop.prometheus.rule_health() == []


def test_drift_alert_reaches_alertmanager_and_the_webhook(loop: Loop) -> None:
    def firing_in_alertmanager() -> list[dict[str, Any]]:
        alerts = httpx.get(loop.alertmanager_url + "/api/v2/alerts", timeout=5).json()
        return [a for a in alerts if a["labels"]["alertname"] == "KubeloopDataDrift"]

    (alert,) = eventually(firing_in_alertmanager, 30, what="KubeloopDataDrift in Alertmanager")
    assert alert["labels"] == {
        "alertname": "KubeloopDataDrift",
        "model": loop.model,
        "version": alert["labels"]["version"],
        "namespace": NAMESPACE,
        "severity": "warning",
    }
    assert alert["annotations"]["summary"].startswith(f"{loop.model} V")
    assert "docs/observability.md#kubeloopdatadrift" in alert["annotations"]["runbook"]
    assert [r["name"] for r in alert["receivers"]] != ["null"]

    notified = eventually(
        lambda: [
            a for a in loop.received.alerts() if a["labels"]["alertname"] == "KubeloopDataDrift"
        ],
        30,
        what="KubeloopDataDrift delivered to the webhook",
    )
    assert notified[0]["labels"]["model"] == loop.model


def test_a_healthy_server_raises_no_serving_alert(loop: Loop) -> None:
    # Latency alerts are left out: on a shared 2-core machine p99 is not ours to promise.
    quiet = {
        "KubeloopServerNoModel",
        "KubeloopModelLoadFailing",
        "KubeloopServerErrorRatioHigh",
        "KubeloopModelErrorRateHigh",
        "KubeloopPredictionLogDropping",
        "KubeloopMonitoringStale",
        "KubeloopModelTooOld",
    }
    firing = {a["labels"]["alertname"] for a in loop.prometheus.alerts()}
    assert "KubeloopDataDrift" in firing or loop.received.alerts()
    assert firing & quiet == set()


def test_the_monitoring_run_launched_one_retraining(loop: Loop) -> None:
    assert len(loop.kfp_runs) == 1, loop.monitor_output
    (launched,) = loop.prometheus.query("kubeloop_retrain_launched")
    assert launched["metric"]["model"] == loop.model
    assert launched["metric"]["namespace"] == PUSHGATEWAY_NAMESPACE
