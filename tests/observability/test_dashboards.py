"""The Grafana dashboards without a server: schema, layout, readability, metric names, coverage.

What they show against real data is test_live_stack.py; that each query parses is promtool's job
in tests/k8s/test_chart_schemas.py, and that the chart ships each file as a sidecar ConfigMap is
tests/k8s/test_chart_policy.py.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.utils import series

SCHEMA = json.loads((Path(__file__).with_name("grafana-dashboard.schema.json")).read_text())
DASHBOARDS = series.load_dashboards()
BY_NAME = pytest.mark.parametrize("name", sorted(DASHBOARDS))

# Exported families no dashboard shows, and why. Everything else must appear in a panel.
LEFT_OUT = {
    "kubeloop_drifted_features": "the count behind kubeloop_drift_share; the quality dashboard "
    "shows the share (what the spec's threshold applies to) and "
    "each feature's verdict",
    # Partition upkeep (PostgreSQL only): what on-call needs is the alert, which reads both.
    "kubeloop_prediction_log_default_partition_rows": "read by the alert "
    "KubeloopPredictionLogDefaultPartitionRows; 0 whenever the partitions keep up",
    "kubeloop_prediction_log_partition_days_ahead": "named in that alert's runbook as the "
    "figure to compare; 3 whenever the partitions keep up",
}


def _validator() -> jsonschema.Draft7Validator:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    return jsonschema.Draft7Validator(SCHEMA)


def _schema_errors(dashboard: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator().iter_errors(dashboard)
    ]


@BY_NAME
def test_dashboard_matches_the_projects_schema(name: str) -> None:
    assert _schema_errors(DASHBOARDS[name]) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["panels"][1].update(gridpos=d["panels"][1].pop("gridPos")),
        lambda d: d["panels"][1]["targets"][0].update(
            datasource={"type": "prometheus", "uid": "prometheus"}
        ),
        lambda d: d["panels"][1]["fieldConfig"]["defaults"].pop("unit"),
        lambda d: d["panels"][1].update(type="graph"),
        lambda d: d["panels"][1]["gridPos"].update(w=25),
    ],
    ids=["typo", "fixed-datasource", "no-unit", "old-panel-type", "too-wide"],
)
def test_schema_refuses_a_broken_dashboard(breakage) -> None:
    broken = copy.deepcopy(DASHBOARDS["serving"])
    breakage(broken)
    assert _schema_errors(broken)


def test_dashboard_uids_and_titles_are_unique() -> None:
    assert len({d["uid"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)
    assert len({d["title"] for d in DASHBOARDS.values()}) == len(DASHBOARDS)
    assert set(DASHBOARDS) == {"serving", "quality", "loop"}


@BY_NAME
def test_panels_tile_the_grid_without_overlap(name: str) -> None:
    items = DASHBOARDS[name]["panels"]
    assert len({p["id"] for p in items}) == len(items), "panel ids repeat"
    taken: set[tuple[int, int]] = set()
    for panel in items:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


@BY_NAME
def test_datasource_and_namespace_are_variables(name: str) -> None:
    variables = {v["name"]: v for v in DASHBOARDS[name]["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "namespace" in variables
    for expr in (t["expr"] for p in series.panels(DASHBOARDS[name]) for t in p["targets"]):
        # Variables used must be defined (or Grafana's own).
        for var in re.findall(r"\$\{?(\w+)", expr):
            assert var in variables or var.startswith("__"), f"${var} undefined: {expr}"


@BY_NAME
def test_panels_are_readable_without_knowing_the_metric_names(name: str) -> None:
    for panel in series.panels(DASHBOARDS[name]):
        text = panel["title"] + " " + panel["description"]
        assert not re.search(r"\b(kubeloop|kube)_\w+", text), panel["title"]
        assert panel["description"].rstrip().endswith("."), panel["title"]
        for target in panel["targets"]:
            table = target.get("format") == "table"
            assert table or target["legendFormat"], f"{panel['title']}: no legend"
            assert "{{" not in target["legendFormat"] or "by (" in target["expr"], (
                f"{panel['title']}: legend label the query does not keep"
            )


@BY_NAME
def test_units_and_thresholds_are_set(name: str) -> None:
    for panel in series.panels(DASHBOARDS[name]):
        defaults = panel["fieldConfig"]["defaults"]
        steps = defaults["thresholds"]["steps"]
        assert steps[0]["value"] is None, f"{panel['title']}: the base step has no value"
        values = [s["value"] for s in steps[1:]]
        assert values == sorted(values), panel["title"]
        if re.search(r"\bKubeloop[A-Z]\w+", panel["description"]):
            # A panel that names an alert shows where it fires: a threshold or a verdict.
            assert len(steps) > 1 or defaults.get("mappings"), panel["title"]


def test_every_metric_used_is_exported_by_the_code() -> None:
    exported = set(series.exported_series())
    allowed = exported | series.CLUSTER_SERIES | series.PROMETHEUS_SERIES
    for dashboard in DASHBOARDS.values():
        for panel in series.panels(dashboard):
            for target in panel["targets"]:
                names = series.metric_names(target["expr"])
                assert names, f"{panel['title']}: no metric in {target['expr']}"
                assert names <= allowed, f"{panel['title']}: {names - allowed}"
        for query in series.variable_queries(dashboard).values():
            selector, _ = series.label_values(query)
            assert series.metric_names(selector) <= exported


def test_every_exported_metric_is_on_a_dashboard_or_left_out_on_purpose() -> None:
    used = {
        n
        for d in DASHBOARDS.values()
        for p in series.panels(d)
        for t in p["targets"]
        for n in series.metric_names(t["expr"])
    }
    families = series.exported_families()
    missing = sorted(
        f for f, (_, series) in families.items() if not series & used and f not in LEFT_OUT
    )
    assert missing == [], "exported but on no dashboard and not in LEFT_OUT"
    shown_anyway = sorted(f for f in LEFT_OUT if families[f][1] & used)
    assert shown_anyway == [], "in LEFT_OUT but on a dashboard"
    assert set(LEFT_OUT) <= set(families)


def test_metric_names_reads_promql_as_written() -> None:
    expr = (
        'sum by (le, role) (rate(a_bucket{x="y", role!~"b|c"}[5m])) / on (role) '
        "group_left (v) max without (i) (b) or vector(0) > 1e3 and time() - c offset 5m"
    )
    assert series.metric_names(expr) == {"a_bucket", "b", "c"}
    assert series.label_values(
        'label_values(kubeloop_model_ready{namespace="$namespace"}, job)'
    ) == (
        'kubeloop_model_ready{namespace="$namespace"}',
        "job",
    )


def test_dashboards_render_into_the_charts_config_maps() -> None:
    from tests.k8s.chart import kinds, render

    maps = {
        c["metadata"]["name"]: c["data"]
        for c in kinds(render(), "ConfigMap")
        if c["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboards"
    }
    shipped = {key: json.loads(text) for data in maps.values() for key, text in data.items()}
    assert shipped == {f"kubeloop-{name}.json": d for name, d in DASHBOARDS.items()}
