"""The kustomize base is the chart rendered (by Helm's Go SDK) with manifests/base/values.yaml.

`python -m tests.k8s.manifests` writes manifests/base/kubeloop.yaml; test_kustomize.py renders it
again and fails when the committed file differs, so the base never drifts from the chart.
"""

from __future__ import annotations

import yaml

from tests.k8s.chart import REPO, load_values, render

BASE = REPO / "manifests" / "base"
HEADER = """\
# GENERATED from helm/kubeloop with manifests/base/values.yaml: do not edit by hand.
# Regenerate with `.venv/bin/python -m tests.k8s.manifests` (tests/k8s/test_kustomize.py checks it).
"""


def render_base() -> str:
    objects = render(load_values(BASE / "values.yaml"))
    for obj in objects:
        # kustomize sets the namespace; the Helm bookkeeping labels mean nothing here.
        obj["metadata"].pop("namespace", None)
        for labels in (obj["metadata"].get("labels") or {},):
            labels.pop("helm.sh/chart", None)
            labels["app.kubernetes.io/managed-by"] = "kustomize"
    objects.sort(key=lambda o: (o["kind"], o["metadata"]["name"]))
    return HEADER + "".join("---\n" + yaml.safe_dump(o, sort_keys=False) for o in objects)


if __name__ == "__main__":
    (BASE / "kubeloop.yaml").write_text(render_base())
    print(f"wrote {BASE / 'kubeloop.yaml'}")
