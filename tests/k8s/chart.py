"""Rendering the Helm chart with Helm's own Go SDK (helm-python-sdk), for tests/k8s."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kubeloop"
RELEASE = "kubeloop"
NAMESPACE = "kubeloop"
KUBE_VERSIONS = ("1.30", "1.33", "1.35")

# Every values scenario the chart must render: the defaults, each environment, each ci/ case.
VALUES_FILES: tuple[Path | None, ...] = (
    None,
    CHART / "values-dev.yaml",
    CHART / "values-staging.yaml",
    CHART / "values-prod.yaml",
    *sorted((CHART / "ci").glob("*-values.yaml")),
)


def scenario_id(path: Path | None) -> str:
    return "defaults" if path is None else str(path.relative_to(CHART))


def load_values(path: Path | None) -> dict[str, Any]:
    return {} if path is None else (yaml.safe_load(path.read_text()) or {})


@functools.cache
def _rendered(values_json: str, release: str, namespace: str) -> tuple[tuple[str, str], ...]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        out = chart.render(
            json.loads(values_json), name=release, namespace=namespace, is_install=True
        )
    return tuple(sorted(out.items()))


def render_files(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included), as `helm template` would produce."""
    return dict(_rendered(json.dumps(values or {}, sort_keys=True), release, namespace))


def render(values: dict[str, Any] | None = None, **kw: str) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders for these values (helm test hooks included)."""
    objects = []
    for path, text in render_files(values, **kw).items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def render_scenario(path: Path | None) -> list[dict[str, Any]]:
    return render(load_values(path))


def kinds(objects: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in names]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owner object, pod spec) for every Deployment, CronJob and bare Pod."""
    for obj in objects:
        kind = obj["kind"]
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj, obj["spec"]["template"]["spec"]
        elif kind == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif kind == "Pod":
            yield obj, obj["spec"]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owner object, container) for every container and init container."""
    for owner, spec in pod_specs(objects):
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield owner, container


def is_hook(obj: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})
