"""Prometheus metrics of the model server (prometheus-client, ``kubeloop_`` prefix).

With several uvicorn workers, set ``PROMETHEUS_MULTIPROC_DIR`` (``python -m serving`` does it
for you when ``KUBELOOP_WORKERS`` > 1): every worker then writes its samples to files there
and ``/metrics`` on any worker aggregates all of them. ``METRIC_NAMES`` lists every exported
family; dashboards and alerts are checked against it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "kubeloop"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Every metric family the server exports (counter names with their _total suffix).
METRIC_NAMES: tuple[str, ...] = (
    "kubeloop_requests_total",
    "kubeloop_request_duration_seconds",
    "kubeloop_requests_in_flight",
    "kubeloop_predictions_total",
    "kubeloop_prediction_value",
    "kubeloop_predicted_class_total",
    "kubeloop_predict_batch_rows",
    "kubeloop_predict_duration_seconds",
    "kubeloop_feature_lookup_duration_seconds",
    "kubeloop_feature_lookup_failures_total",
    "kubeloop_prediction_log_queue_rows",
    "kubeloop_prediction_log_written_rows_total",
    "kubeloop_prediction_log_dropped_rows_total",
    "kubeloop_prediction_log_write_failures_total",
    "kubeloop_model_loads_total",
    "kubeloop_model_load_failures_total",
    "kubeloop_model_info",
    "kubeloop_model_ready",
    "kubeloop_canary_weight",
    "kubeloop_shadow_dropped_total",
)

# Request latencies on a lean server are sub-millisecond to tens of milliseconds.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
LOOKUP_BUCKETS = (
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.0025,
    0.003,
    0.004,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Label values whose series exist (at 0) from start-up, so a first failure is an increase that
# rate()/increase() and the alerts see, and dashboards show 0 rather than "No data".
LOG_DROP_REASONS = ("queue_full", "write_error", "writer_lost")  # serving/prediction_log.py
MODEL_ALIASES = ("champion", "challenger")  # kubeloop/registry.py CHAMPION, CHALLENGER


def observe_many(histogram, values: np.ndarray) -> None:
    """``histogram.observe`` for every value, vectorized: one numpy pass and one increment per
    bucket instead of a Python call per value (a 100-row request would otherwise spend more
    time in metrics than in the model). Falls back to ``observe`` if prometheus-client's
    internals ever change."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(values) < 4:
        for value in values.tolist():
            histogram.observe(value)
        return
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    total.inc(float(values.sum()))
    for i in np.flatnonzero(counts[: len(bounds)]).tolist():
        buckets[i].inc(int(counts[i]))


def multiprocess_dir() -> str | None:
    """The directory prometheus-client writes samples to, or None in single-process mode.

    Decided by what prometheus-client chose when it was imported, not by the environment now:
    importing Feast sets ``PROMETHEUS_MULTIPROC_DIR`` to a temporary folder of its own (see
    ``feast/metrics.py``), which must not switch a single-process server to an empty folder.
    """
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """The server's metric families, registered on their own registry (one per app)."""

    def __init__(
        self,
        prediction_buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
        aliases: Sequence[str] = MODEL_ALIASES,
    ):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.multiprocess_dir = multiprocess_dir()
        if self.multiprocess_dir is None:
            ProcessCollector(registry=r)  # RSS and CPU of this process
        self.requests = Counter(
            "requests",
            "HTTP requests by route template, method, status, model version (registry "
            "number as in the prediction log; kubeloop_model_info gives its V-name) and role.",
            ["route", "method", "status", "model_version", "role"],
            namespace=PREFIX,
            registry=r,
        )
        self.request_duration = Histogram(
            "request_duration_seconds",
            "Time from request received to response sent, by "
            "route, method, model version and role (as on kubeloop_requests_total).",
            ["route", "method", "model_version", "role"],
            namespace=PREFIX,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.in_flight = Gauge(
            "requests_in_flight",
            "Requests being handled now (health and /metrics excluded).",
            namespace=PREFIX,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.predictions = Counter(
            "predictions",
            "Predictions made (rows), by model version and role.",
            ["model_version", "role"],
            namespace=PREFIX,
            registry=r,
        )
        self.predicted_class = Counter(
            "predicted_class",
            "Classification: predictions (rows) by predicted class, model version and role.",
            ["model_version", "role", "class"],
            namespace=PREFIX,
            registry=r,
        )
        self.prediction_value = Histogram(
            "prediction_value",
            "Distribution of predicted values.",
            ["model_version", "role"],
            namespace=PREFIX,
            registry=r,
            buckets=tuple(prediction_buckets),
        )
        self.batch_rows = Histogram(
            "predict_batch_rows",
            "Rows per model predict call after micro-batching.",
            namespace=PREFIX,
            registry=r,
            buckets=BATCH_BUCKETS,
        )
        self.predict_duration = Histogram(
            "predict_duration_seconds",
            "Duration of one model predict call (a micro-batch).",
            namespace=PREFIX,
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.lookup_duration = Histogram(
            "feature_lookup_duration_seconds",
            "Online-store read that served a request's entities (one read serves every request "
            "that arrived while the previous one ran).",
            ["backend"],
            namespace=PREFIX,
            registry=r,
            buckets=LOOKUP_BUCKETS,
        )
        self.lookup_failures = Counter(
            "feature_lookup_failures",
            "Online feature lookups that failed (store unreachable).",
            ["backend"],
            namespace=PREFIX,
            registry=r,
        )
        self.log_queue = Gauge(
            "prediction_log_queue_rows",
            "Rows waiting to be written to the prediction log.",
            namespace=PREFIX,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.log_written = Counter(
            "prediction_log_written_rows",
            "Rows written to the prediction log.",
            namespace=PREFIX,
            registry=r,
        )
        self.log_dropped = Counter(
            "prediction_log_dropped_rows",
            "Rows not logged: queue full or writes kept failing.",
            ["reason"],
            namespace=PREFIX,
            registry=r,
        )
        self.log_write_failures = Counter(
            "prediction_log_write_failures",
            "Failed write attempts (each is retried).",
            namespace=PREFIX,
            registry=r,
        )
        self.model_loads = Counter(
            "model_loads",
            "Model versions loaded, by alias.",
            ["alias"],
            namespace=PREFIX,
            registry=r,
        )
        self.model_load_failures = Counter(
            "model_load_failures",
            "Model versions that failed to load (the old one kept serving).",
            ["alias"],
            namespace=PREFIX,
            registry=r,
        )
        self.model_info = Gauge(
            "model_info",
            "1 for the model version serving an alias, 0 for versions it replaced.",
            ["alias", "model_version", "model_label"],
            namespace=PREFIX,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.model_ready = Gauge(
            "model_ready",
            "1 once a champion is loaded.",
            namespace=PREFIX,
            registry=r,
            multiprocess_mode="livemin",
        )
        self.canary_weight = Gauge(
            "canary_weight",
            "Share of records routed to the candidate.",
            namespace=PREFIX,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.shadow_dropped = Counter(
            "shadow_dropped",
            "Requests not shadowed: too many shadow scorings were pending.",
            namespace=PREFIX,
            registry=r,
        )
        for reason in LOG_DROP_REASONS:
            self.log_dropped.labels(reason)
        for alias in aliases:
            self.model_loads.labels(alias)
            self.model_load_failures.labels(alias)
        self._request_children: dict[tuple[str, str, str, str, str], object] = {}
        self._duration_children: dict[tuple[str, str, str, str], object] = {}
        self._prediction_children: dict[tuple[str, str], tuple[object, object]] = {}

    # Hot-path helpers: label children are cached, so a request costs a dict lookup per metric.
    def observe_request(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        model_version: str = "",
        role: str = "",
    ) -> None:
        key = (route, method, str(status), model_version, role)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(*key)
        child.inc()  # type: ignore[attr-defined]
        dkey = (route, method, model_version, role)
        duration = self._duration_children.get(dkey)
        if duration is None:
            duration = self._duration_children[dkey] = self.request_duration.labels(*dkey)
        duration.observe(seconds)  # type: ignore[attr-defined]

    def observe_predictions(self, model_version: str, role: str, values: np.ndarray) -> None:
        key = (model_version, role)
        children = self._prediction_children.get(key)
        if children is None:
            children = self._prediction_children[key] = (
                self.predictions.labels(*key),
                self.prediction_value.labels(*key),
            )
        count, histogram = children
        count.inc(len(values))  # type: ignore[attr-defined]
        observe_many(histogram, values)

    def observe_classes(
        self, model_version: str, role: str, probabilities: np.ndarray, classes: np.ndarray
    ) -> None:
        """A classifier's rows: counted, and counted by predicted class (the distribution a
        dashboard compares across versions); one increment per class present."""
        self.predictions.labels(model_version, role).inc(len(probabilities))
        counts = np.bincount(probabilities.argmax(axis=1), minlength=len(classes))
        names = classes.tolist()
        for j in np.flatnonzero(counts).tolist():
            self.predicted_class.labels(model_version, role, str(names[j])).inc(int(counts[j]))

    def exposition(self) -> bytes:
        """The text exposition format; aggregates all workers in multiprocess mode."""
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)
