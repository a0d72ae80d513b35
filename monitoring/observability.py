"""Dashboards and alert rules of kubeloop: where they are, what they may use, how to reach them.

One source per artefact (docs/observability.md):

- Grafana dashboards: ``helm/kubeloop/dashboards/*.json``, shipped by the chart as sidecar
  ConfigMaps and importable by hand.
- Alert rules: ``helm/kubeloop/rules/*.yaml``, Prometheus rule groups the chart renders with
  ``tpl`` into its PrometheusRule. ``render_rules`` renders the same files outside Helm (the
  chart's template subset: ``{{ .param }}``, quoted or raw string literals, ``{{-``/``-}}``), so
  the plain rules file ``monitoring/alerts/kubeloop-monitoring.rules.yaml`` for a Prometheus
  without the operator is generated from them (``python -m monitoring.observability rules``,
  ``make alert-rules``), never edited by hand.
- Metric names: ``exported_series`` is every series the server and the monitoring job export,
  read from the code; dashboards and rules may use only those (and Prometheus's own ``up``),
  plus the kube-state-metrics series of ``CLUSTER_SERIES``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "kubeloop"
DASHBOARDS = CHART / "dashboards"
RULES = CHART / "rules"
PLAIN_RULES = REPO / "monitoring" / "alerts" / "kubeloop-monitoring.rules.yaml"
# The scrape job name of the server in the demo's Prometheus (the chart's Service name).
SERVER_JOB = "kubeloop-server"

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


# -- alert rules -------------------------------------------------------------------------------
def _action_text(action: str, params: Mapping[str, Any], where: str) -> str:
    if re.fullmatch(r"\.[A-Za-z_]\w*", action):
        name = action[1:]
        if name not in params:
            raise KeyError(f"{where}: template parameter .{name} is not defined")
        return str(params[name])
    if re.fullmatch(r'"(?:[^"\\\n]|\\.)*"', action):
        return json.loads(action)
    if re.fullmatch(r"`[^`]*`", action):
        return action[1:-1]
    raise ValueError(
        f"{where}: `{{{{ {action} }}}}` is outside the template subset the rules "
        "may use ({{ .param }}, string literals)"
    )


def _action_end(text: str, start: int, where: str) -> int:
    """Index of the ``}}`` closing the action whose body starts at ``start`` (string literals
    inside the action may contain ``}}``)."""
    i = start
    while i < len(text):
        if text.startswith("}}", i):
            return i
        quote = text[i]
        if quote in '`"':
            i += 1
            while i < len(text) and text[i] != quote:
                i += 2 if quote == '"' and text[i] == "\\" else 1
        i += 1
    raise ValueError(f"{where}: unclosed {{{{ at offset {start}")


def render_template(text: str, params: Mapping[str, Any], where: str = "template") -> str:
    """Go-template rendering of the subset the rule files use, as Helm's ``tpl`` does it:
    ``{{ .param }}``, ``{{ "quoted" }}``, ``{{`raw`}}``, and the ``{{- ``/`` -}}`` trim
    markers (which remove the whitespace, newlines included, on their side)."""
    out: list[str] = []
    i = 0
    trim_next = False
    while True:
        j = text.find("{{", i)
        literal = text[i:] if j < 0 else text[i:j]
        if trim_next:
            literal = literal.lstrip()
        if j < 0:
            out.append(literal)
            return "".join(out)
        body_start = j + 2
        if text.startswith("- ", body_start):
            literal = literal.rstrip()
            body_start += 2
        out.append(literal)
        end = _action_end(text, body_start, where)
        action = text[body_start:end]
        trim_next = action.endswith(" -")
        if trim_next:
            action = action[:-2]
        out.append(_action_text(action.strip(), params, where))
        i = end + 2


def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def rule_params(
    namespace: str = "", job: str = "", values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Parameters of the rule templates, as the chart's PrometheusRule template builds them.

    Args:
        namespace: The release namespace; empty for the plain rules file.
        job: The server's scrape job (its Service name); with ``namespace``, the label matchers
            that select the release's server. Empty: any server.
        values: Chart values (default: helm/kubeloop/values.yaml); thresholds come from
            ``metrics.prometheusRule``.
    """
    rule = (values or chart_defaults())["metrics"]["prometheusRule"]
    server = f'namespace="{namespace}", job="{job}", ' if namespace and job else ""
    return {
        "server": server,
        "namespace": namespace,
        "errorRatio": rule["errorRatio"],
        "latencyP99Seconds": rule["latencyP99Seconds"],
    }


def render_rules(params: Mapping[str, Any], folder: Path = RULES) -> list[dict[str, Any]]:
    """The rule groups of every ``rules/*.yaml`` (in the chart's order), rendered."""
    groups: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        rendered = yaml.safe_load(render_template(path.read_text(), params, path.name))
        groups.extend(rendered["groups"])
    for rule in (r for g in groups for r in g["rules"]):
        if "labels" in rule:  # empty labels mean no label to Prometheus: leave them out
            rule["labels"] = {k: v for k, v in rule["labels"].items() if v != ""}
    return groups


def plain_rules() -> list[dict[str, Any]]:
    """The groups of the plain rules file: any scrape job's kubeloop server (the metric names
    are kubeloop's own; alerts still come per namespace and job), the chart's default
    thresholds."""
    return render_rules(rule_params())


def plain_rules_text() -> str:
    header = """\
# GENERATED from helm/kubeloop/rules/*.yaml by `python -m monitoring.observability rules`
# (`make alert-rules`): edit those files, not this one; a test checks that it is current.
# A plain Prometheus rule file (`rule_files:`) for a Prometheus without the operator: the same
# groups as the chart's PrometheusRule, for the server under any scrape job (the chart scopes
# them to its release), thresholds from helm/kubeloop/values.yaml metrics.prometheusRule.
# Runbooks: docs/observability.md.
"""
    return header + dump_rules(plain_rules())


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as ``|`` blocks, long lines never folded."""


_BlockDumper.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None
    ),
)


def dump_rules(groups: list[dict[str, Any]]) -> str:
    """A rule file's text (``groups:``), readable: PromQL blocks stay blocks."""
    return yaml.dump(
        {"groups": groups},
        Dumper=_BlockDumper,
        sort_keys=False,
        width=1_000_000,
        allow_unicode=True,
    )


def with_short_for(groups: list[dict[str, Any]], duration: str = "1s") -> list[dict[str, Any]]:
    """A copy of the groups whose alerts wait ``duration`` instead of their ``for:`` (tests
    against a live Prometheus; promtool's unit tests check the real durations)."""
    out = json.loads(json.dumps(groups))
    for group in out:
        for rule in group["rules"]:
            if "alert" in rule and "for" in rule:
                rule["for"] = duration
    return out


def alerts(groups: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Alert name -> rule."""
    return {r["alert"]: dict(r) for g in groups for r in g["rules"] if "alert" in r}


# -- Alertmanager ------------------------------------------------------------------------------
_ROUTE_KEYS = {
    "receiver": "receiver",
    "groupBy": "group_by",
    "groupWait": "group_wait",
    "groupInterval": "group_interval",
    "repeatInterval": "repeat_interval",
    "continue": "continue",
}


def alertmanager_config(example: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
    """The chart's ``metrics.alertmanager`` example as a plain ``alertmanager.yml``: the same
    route (matchers, grouping, timing) and webhook receiver the chart's AlertmanagerConfig
    renders, for an Alertmanager without the operator.

    Args:
        example: ``metrics.alertmanager`` of the chart's values.
        namespace: Route only alerts labelled with this namespace, as the prometheus-operator
            does for an AlertmanagerConfig in that namespace; None: no such matcher.
    """
    route = dict(example["route"])
    receiver = example["receiver"]
    plain_route: dict[str, Any] = {_ROUTE_KEYS[k]: v for k, v in route.items() if k in _ROUTE_KEYS}
    plain_route["receiver"] = receiver["name"]
    plain_route["matchers"] = [
        f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in route.get("matchers", [])
    ]
    if namespace is not None:
        plain_route["matchers"].insert(0, f'namespace="{namespace}"')
    webhook = {
        "url": receiver["webhookUrl"],
        "send_resolved": bool(receiver.get("sendResolved", True)),
    }
    return {
        "route": {"receiver": "null", "routes": [plain_route]},
        "receivers": [{"name": "null"}, {"name": receiver["name"], "webhook_configs": [webhook]}],
    }


# -- the demo's pointer ------------------------------------------------------------------------
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
    ``python -m monitoring.observability serve-metrics``) and a server on ``server_port``.
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
        f"    {python} -m monitoring.observability serve-metrics {metrics} --port {metrics_port}",
        f"    {prometheus} --config.file={config} --storage.tsdb.path={work / 'prometheus'} "
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
        f"  then http://127.0.0.1:{prometheus_port}/alerts (the rules on the demo's figures) "
        "and, as a Grafana data source, the model quality and loop dashboards; with a server "
        f"on :{server_port} (KUBELOOP_WORK_DIR={work} kubeloop serve) the serving one too.",
    ]
    return "\n".join(lines)


USAGE = """usage:
  python -m monitoring.observability rules [PATH]
      write the plain rules file (default monitoring/alerts/kubeloop-monitoring.rules.yaml)
  python -m monitoring.observability serve-metrics FOLDER [--port 9108]
      serve the monitoring job's textfiles (FOLDER/*.prom) on 127.0.0.1:PORT/metrics"""


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["rules"] and len(args) <= 2:
        target = Path(args[1]) if len(args) > 1 else PLAIN_RULES
        target.write_text(plain_rules_text())
        print(f"wrote {target}")
    elif args[:1] == ["serve-metrics"] and len(args) in (2, 4) and args[2:3] in ([], ["--port"]):
        import time

        from monitoring import exporter

        port = int(args[3]) if len(args) == 4 else 9108
        exporter.serve(Path(args[1]), port)
        print(
            f"serving {args[1]}/*.prom on http://127.0.0.1:{port}/metrics (Ctrl-C stops)",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    else:
        raise SystemExit(USAGE)


if __name__ == "__main__":
    main()
