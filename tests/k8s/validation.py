"""Checks of rendered objects against real schemas and tools (chart and kustomize tests).

- Kubernetes kinds: kubernetes-validate (strict: unknown fields fail) for each supported version.
- prometheus-operator kinds: the CRD schemas of @kubernetes-models/prometheus-operator (npm),
  run by node (tests/k8s/crd/validate.mjs).
- PromQL: `promtool check rules` from Debian's prometheus package.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

CRD_GROUPS = ("monitoring.coreos.com/",)


def is_custom_resource(obj: dict[str, Any]) -> bool:
    return obj["apiVersion"].startswith(CRD_GROUPS)


def kubernetes_errors(objects: list[dict[str, Any]], version: str) -> list[str]:
    """Strict schema errors of every built-in object; a kind without a schema is an error too."""
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

    errors = []
    for obj in objects:
        if is_custom_resource(obj):
            continue
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{label} (k8s {version}): {path}: {exc.message}")
        except SchemaNotFoundError as exc:
            errors.append(f"{label}: {exc.message}")
    return errors


def custom_resource_errors(objects: list[dict[str, Any]], validator: list[str]) -> list[str]:
    """CRD schema errors of every prometheus-operator object."""
    custom = [o for o in objects if is_custom_resource(o)]
    if not custom:
        return []
    proc = subprocess.run(
        validator, input=json.dumps(custom), capture_output=True, text=True, timeout=120, check=True
    )
    results = json.loads(proc.stdout)
    assert len(results) == len(custom)
    return [f"{r['kind']}/{r['name']}: {e}" for r in results for e in r["errors"]]


def promtool_check(promtool: str, groups: list[dict[str, Any]], workdir: Path) -> None:
    """`promtool check rules` on rule groups; raises AssertionError with promtool's words."""
    path = workdir / f"rules-{abs(hash(json.dumps(groups, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": "kubeloop",
    "$job": "kubeloop-server",
}


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a Grafana dashboard, Grafana's variables substituted."""
    exprs = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if isinstance(query, str) and query.startswith(("label_values(", "query_result(")):
            inner = re.match(r"^\w+\((.*?)(?:,\s*\w+)?\)$", query)
            if inner:
                exprs.append(inner.group(1))
    out = []
    for expr in exprs:
        for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
            expr = expr.replace(name, GRAFANA_VARIABLES[name])
        out.append(expr)
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (identifiers followed by { or [ or space)."""
    return set(re.findall(r"\b(kubeloop_[a-zA-Z0-9_]+)", expr))
