"""The chart's alert rules as Helm renders them, and the plain rules file generated from them.

The one source of the alerts is helm/kubeloop/rules/*.yaml, which the chart's PrometheusRule
renders with ``tpl``. The plain rules file for a Prometheus without the operator
(monitoring/alerts/kubeloop-monitoring.rules.yaml) is that PrometheusRule's groups, rendered by
Helm's own SDK (helm-python-sdk), with the release scoping taken out. Generating it is a
developer's step (``make alert-rules``: ``python -m tests.utils.alert_rules``) and the Helm SDK is
a dev dependency, so this lives with the test helpers and the product only ships the file;
tests/observability checks that the file is current.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from monitoring.observability import PLAIN_RULES
from tests.k8s.chart import CHART, kinds, render

# The plain file is rendered as this release, then its scoping is removed; a namespace that
# appears nowhere else in the rules, so that every trace of it can be found.
_PLAIN_NAMESPACE = "plain-rules-release-namespace"
# Helm's toYaml sorts keys; the plain file keeps the rule files' reading order.
_KEY_ORDER = ("alert", "record", "expr", "for", "labels", "annotations")


def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def chart_groups(
    *, release: str = "kubeloop", namespace: str = "kubeloop", **thresholds: float
) -> tuple[list[dict[str, Any]], str]:
    """The rule groups of the chart's PrometheusRule for a release and the scrape job (the
    server Service's name) its rules select. ``thresholds`` override
    ``metrics.prometheusRule`` values (``errorRatio``, ``latencyP99Seconds``)."""
    objects = render(
        {"metrics": {"prometheusRule": {"enabled": True, **thresholds}}},
        release=release,
        namespace=namespace,
    )
    (rule,) = kinds(objects, "PrometheusRule")
    (service,) = [
        s
        for s in kinds(objects, "Service")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    ]
    return rule["spec"]["groups"], service["metadata"]["name"]


def plain_rules() -> list[dict[str, Any]]:
    """The chart's groups for any scrape job's kubeloop server (the metric names are kubeloop's
    own; alerts still come per namespace and job), with the chart's default thresholds: the
    release's ``namespace=..., job=...`` matchers and its ``namespace`` label removed."""
    groups, job = chart_groups(namespace=_PLAIN_NAMESPACE)
    matchers = f'namespace="{_PLAIN_NAMESPACE}", job="{job}", '
    for group in groups:
        group["rules"] = [_unscoped(rule, matchers) for rule in group["rules"]]
    text = json.dumps(groups)
    if _PLAIN_NAMESPACE in text:
        raise ValueError(
            "the rules use the release namespace somewhere other than the .server matchers "
            "and a label: teach tests/utils/alert_rules.py.plain_rules to remove it"
        )
    return groups


def _unscoped(rule: dict[str, Any], matchers: str) -> dict[str, Any]:
    rule = {**rule, "expr": rule["expr"].replace(matchers, "")}
    if "labels" in rule:
        rule["labels"] = {k: v for k, v in rule["labels"].items() if v != _PLAIN_NAMESPACE}
    order = [k for k in _KEY_ORDER if k in rule] + sorted(set(rule) - set(_KEY_ORDER))
    return {k: rule[k] for k in order}


def plain_rules_text() -> str:
    header = """\
# GENERATED from helm/kubeloop/rules/*.yaml by `make alert-rules` (the chart's PrometheusRule
# as Helm renders it): edit those files, not this one; a test checks that it is current.
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
    renders, for an Alertmanager without the operator (docs/observability.md shows it).

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


def main(argv: list[str]) -> None:
    """``python -m tests.utils.alert_rules [PATH]``: write the plain rules file."""
    target = Path(argv[0]) if argv else PLAIN_RULES
    target.write_text(plain_rules_text())
    print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
