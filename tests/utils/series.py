"""Which series the code exports, and which a rule or a dashboard selects: for tests.

``exported_series`` is every series the model server and the monitoring job export, read from
the code; dashboards and rules may use only those (and Prometheus's own ``up``), plus the
kube-state-metrics series of ``CLUSTER_SERIES``. ``metric_names`` finds the names a PromQL
expression selects; ``panels``, ``variable_queries``, ``label_values`` and ``substitute`` read
Grafana's JSON model the way Grafana does. The product ships the dashboards and rules, not these
checks (docs/observability.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from monitoring.observability import DASHBOARDS

# kube-state-metrics series the serving dashboard reads (replicas, HPA). They exist only on a
# cluster; the panels using them say so (docs/observability.md).
CLUSTER_SERIES = frozenset(
    {
        "kube_deployment_spec_replicas",
        "kube_deployment_status_replicas_available",
        "kube_horizontalpodautoscaler_spec_min_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "kube_horizontalpodautoscaler_spec_target_metric",
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_status_desired_replicas",
    }
)


def task_series(task: str) -> frozenset[str]:
    """The series only a model of ``task`` gives: its live quality figures (one per metric the
    spec allows for the task) and, for a classifier, its predicted classes."""
    from kubeloop.spec import TASK_METRICS

    names = {f"kubeloop_model_{metric}" for metric in TASK_METRICS[task]}
    if task == "classification":
        names.add("kubeloop_predicted_class_total")
    return frozenset(names)


# Prometheus's own series, always there for a scraped target.
PROMETHEUS_SERIES = frozenset({"up"})


# -- metric names ------------------------------------------------------------------------------
def _series_of(name: str, kind: str) -> set[str]:
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    if kind == "counter":
        return {f"{name}_total"}
    return {name}


def server_families() -> dict[str, str]:
    """Family name -> type of every ``kubeloop_`` family the model server registers."""
    from prometheus_client import CollectorRegistry

    from serving.metrics import Metrics

    registry = CollectorRegistry()
    Metrics((0.0, 1.0), registry=registry)
    return {f.name: f.type for f in registry.collect() if f.name.startswith("kubeloop_")}


def exported_families() -> dict[str, tuple[str, frozenset[str]]]:
    """Every metric family the code exports -> (``server`` or ``job``, its series names).

    Read from the code: the server's registry (histograms as ``_bucket``/``_sum``/``_count``,
    counters with ``_total``) and the monitoring job's gauges (``exporter.METRIC_NAMES``).
    """
    from monitoring.exporter import METRIC_NAMES as JOB_METRICS

    out: dict[str, tuple[str, frozenset[str]]] = {}
    for name, kind in server_families().items():
        out[name] = ("server", frozenset(_series_of(name, kind)))
    for name in JOB_METRICS:
        out[name] = ("job", frozenset({name}))
    return out


def exported_series() -> dict[str, str]:
    """Every series name the code exports -> ``server`` or ``job`` (the monitoring run)."""
    return {series: source for source, names in exported_families().values() for series in names}


_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (no parser needed for the subset we write).

    Strings, label matchers, grouping lists and durations are removed first; what remains and
    is neither a function call, a keyword nor a number is a metric name.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        following = text[match.end() :].lstrip()[:1]
        if following == "(" or word.lower() in _KEYWORDS:
            continue
        if match.start() > 0 and (
            text[match.start() - 1].isdigit() or text[match.start() - 1] == "."
        ):
            continue  # the unit of a number like 1e3 or 0.5
        names.add(word)
    return names


# -- dashboards --------------------------------------------------------------------------------
def load_dashboards(folder: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    """File stem -> dashboard JSON model."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included, rows themselves excluded."""
    out: list[dict[str, Any]] = []

    def walk(items: Iterable[dict[str, Any]]) -> None:
        for panel in items:
            if panel.get("type") != "row":
                out.append(panel)
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    return out


def variable_queries(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Variable name -> its PromQL query (``label_values(...)``), for query variables."""
    out: dict[str, str] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        out[var["name"]] = str(query.get("query") if isinstance(query, dict) else query)
    return out


def label_values(query: str) -> tuple[str, str]:
    """``label_values(<series selector>, <label>)`` -> (selector, label)."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\s*\)", query.strip(), re.S)
    if match is None:
        raise ValueError(f"not a label_values(selector, label) query: {query}")
    return match.group(1).strip(), match.group(2)


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Grafana's ``$name`` / ``${name}`` variables replaced (longest names first)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values[name]).replace("$" + name, values[name])
    return expr
