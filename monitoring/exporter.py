"""Prometheus metrics of a monitoring run.

A monitoring run is a batch job: it builds a fresh registry with gauges, then pushes it to a
Pushgateway (cluster; one group per model, replaced by every run) or writes it as a textfile
(``<work_dir>/metrics/<model>.prom``) that ``serve`` exposes for a local Prometheus to scrape.
``METRIC_NAMES`` lists every family exported here; dashboards and alert rules are checked
against it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

QUALITY_METRICS = ("mse", "rmse", "mae", "r2", "accuracy", "f1", "roc_auc", "log_loss")

# Every metric family a monitoring run exports (all gauges; labels in ``_HELP``).
METRIC_NAMES: tuple[str, ...] = (
    "kubeloop_monitor_last_run_timestamp_seconds",
    "kubeloop_monitor_duration_seconds",
    "kubeloop_monitor_window_rows",
    "kubeloop_monitor_labelled_rows",
    "kubeloop_drift_share",
    "kubeloop_drift_share_threshold",
    "kubeloop_drift_detected",
    "kubeloop_drifted_features",
    "kubeloop_feature_drift_score",
    "kubeloop_feature_drifted",
    "kubeloop_prediction_drift_score",
    "kubeloop_prediction_drifted",
    *(f"kubeloop_model_{m}" for m in QUALITY_METRICS),
    "kubeloop_model_primary_metric",
    "kubeloop_quality_loss_ratio",
    "kubeloop_quality_loss_threshold",
    "kubeloop_new_labelled_rows",
    "kubeloop_model_trained_timestamp_seconds",
    "kubeloop_retrain_triggered",
    "kubeloop_retrain_launched",
    "kubeloop_retrain_last_launch_timestamp_seconds",
    "kubeloop_registry_alias_info",
    "kubeloop_registry_alias_since_timestamp_seconds",
    "kubeloop_registry_latest_version_timestamp_seconds",
    "kubeloop_prediction_log_partition_days_ahead",
    "kubeloop_prediction_log_default_partition_rows",
)

BASE_LABELS = ("model", "version")
_SPECS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kubeloop_monitor_last_run_timestamp_seconds": ("When the monitoring run ended.", ()),
    "kubeloop_monitor_duration_seconds": ("Wall time of the monitoring run.", ()),
    "kubeloop_monitor_window_rows": ("Predictions in the monitored window.", ()),
    "kubeloop_monitor_labelled_rows": ("Predictions in the window with ground truth.", ()),
    "kubeloop_drift_share": ("Share of the model's features that drifted.", ()),
    "kubeloop_drift_share_threshold": (
        "The spec's monitoring.drift_share: drift is detected at this share.",
        (),
    ),
    "kubeloop_drift_detected": ("1 when the drifted share reached the spec's threshold.", ()),
    "kubeloop_drifted_features": ("Number of features that drifted.", ()),
    "kubeloop_feature_drift_score": (
        "Evidently drift score of a feature (the method label says which test).",
        ("feature", "method"),
    ),
    "kubeloop_feature_drifted": ("1 when Evidently's drift test failed.", ("feature",)),
    "kubeloop_prediction_drift_score": ("Evidently drift score of the predictions.", ("method",)),
    "kubeloop_prediction_drifted": ("1 when the predictions drifted.", ()),
    **{
        f"kubeloop_model_{m}": (
            f"Model {m.upper()}: live on the window's labelled rows, or the baseline "
            "(held-out at training).",
            ("dataset",),
        )
        for m in QUALITY_METRICS
    },
    "kubeloop_model_primary_metric": (
        "The task's primary metric (the spec's evaluation.primary_metric: RMSE for regression, "
        "weighted F1 for classification unless the spec names another), live or baseline: one "
        "series a dashboard shows whatever the task.",
        ("dataset", "metric"),
    ),
    "kubeloop_quality_loss_ratio": (
        "Relative loss of the primary metric against the baseline (0.2 = 20% worse).",
        ("metric",),
    ),
    "kubeloop_quality_loss_threshold": (
        "The spec's monitoring.quality_loss: a larger loss ratio calls for retraining.",
        (),
    ),
    "kubeloop_new_labelled_rows": ("Labelled rows arrived since the model was trained.", ()),
    "kubeloop_model_trained_timestamp_seconds": ("When the monitored model was trained.", ()),
    "kubeloop_retrain_triggered": ("1 when this run found a reason to retrain.", ("reason",)),
    "kubeloop_retrain_launched": ("1 when this run launched a retraining.", ()),
    "kubeloop_retrain_last_launch_timestamp_seconds": ("When retraining was last launched.", ()),
    "kubeloop_registry_alias_info": (
        "1 for the registry version behind an alias (champion, challenger): its registry number "
        "and V-name.",
        ("alias", "model_version", "model_label"),
    ),
    "kubeloop_registry_alias_since_timestamp_seconds": (
        "When the alias moved to its version (promotion; registration for the challenger).",
        ("alias",),
    ),
    "kubeloop_registry_latest_version_timestamp_seconds": (
        "When the newest registry version was registered (the last training that passed the "
        "evaluation gate).",
        (),
    ),
    "kubeloop_prediction_log_partition_days_ahead": (
        "Days from today (UTC, today included) whose prediction log partition exists "
        "(PostgreSQL; the servers' shippers make today's and two more).",
        (),
    ),
    "kubeloop_prediction_log_default_partition_rows": (
        "Prediction log rows in the default partition, stored while their day had no partition "
        "(counted up to 1,000,000).",
        (),
    ),
}
assert set(_SPECS) == set(METRIC_NAMES)


@dataclass
class Sample:
    name: str
    value: float
    labels: dict[str, str] = field(default_factory=dict)


def build_registry(model: str, version: str, samples: Iterable[Sample]) -> CollectorRegistry:
    """A fresh registry holding one gauge per family, labelled with model and version."""
    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for sample in samples:
        if sample.name not in _SPECS:
            raise ValueError(f"{sample.name} is not in METRIC_NAMES")
        help_text, extra = _SPECS[sample.name]
        if sample.name not in gauges:
            gauges[sample.name] = Gauge(
                sample.name, help_text, [*BASE_LABELS, *extra], registry=registry
            )
        labels = {"model": model, "version": version, **sample.labels}
        gauges[sample.name].labels(**labels).set(sample.value)
    return registry


def textfile_path(folder: Path, model: str) -> Path:
    return folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}.prom"


def publish(
    registry: CollectorRegistry,
    model: str,
    *,
    pushgateway_url: str | None,
    job: str,
    folder: Path,
) -> str:
    """Push to the Pushgateway when configured, else write the textfile; returns where."""
    if pushgateway_url:
        from prometheus_client import push_to_gateway

        push_to_gateway(pushgateway_url, job=job, registry=registry, grouping_key={"model": model})
        return pushgateway_url
    from prometheus_client import write_to_textfile

    path = textfile_path(folder, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)  # atomic: written aside, then renamed
    return str(path)


class TextfileCollector:
    """Every ``*.prom`` file of a folder, read again at each scrape and merged by family."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for path in sorted(self.folder.glob("*.prom")):
            try:
                text = path.read_text()
            except OSError:
                continue  # being replaced: the next scrape sees it
            for family in text_string_to_metric_families(text):
                if family.name in merged:
                    merged[family.name].samples.extend(family.samples)
                else:
                    merged[family.name] = family
        yield from merged.values()


def serve(folder: Path, port: int, addr: str = "127.0.0.1") -> tuple[object, threading.Thread]:
    """Serve the folder's textfiles on ``http://addr:port/metrics`` (a daemon thread)."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    registry.register(TextfileCollector(folder))  # type: ignore[arg-type]
    return start_http_server(port, addr=addr, registry=registry)
