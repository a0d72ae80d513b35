"""`kubectl kustomize` renders each overlay; the output validates and keeps the guarantees."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.k8s.chart import KUBE_VERSIONS, REPO, containers, load_values, pod_specs, render
from tests.k8s.manifests import BASE, render_base
from tests.k8s.validation import custom_resource_errors, kubernetes_errors

OVERLAYS = ("dev", "staging", "prod")
_cache: dict[str, list[dict[str, Any]]] = {}


def build(kubectl: str, overlay: str) -> list[dict[str, Any]]:
    if overlay not in _cache:
        folder = REPO / "manifests" / "overlays" / overlay
        proc = subprocess.run(
            [kubectl, "kustomize", str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        _cache[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return _cache[overlay]


def _env(objects: list[dict[str, Any]], owner_name: str) -> dict[str, Any]:
    for owner, container in containers(objects):
        if owner["metadata"]["name"] == owner_name:
            return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
    raise AssertionError(owner_name)


def _by(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_base_is_the_chart_rendered_with_its_values() -> None:
    committed = (BASE / "kubeloop.yaml").read_text()
    assert committed == render_base(), (
        "manifests/base/kubeloop.yaml is stale: run `.venv/bin/python -m tests.k8s.manifests`"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates(
    kubectl: str, crd_validator: list[str], overlay: str
) -> None:
    objects = build(kubectl, overlay)
    assert {o["metadata"].get("namespace", "kubeloop") for o in objects} == {"kubeloop"}
    for version in KUBE_VERSIONS:
        assert kubernetes_errors(objects, version) == []
    assert custom_resource_errors(objects, crd_validator) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_keeps_pods_locked_down(kubectl: str, overlay: str) -> None:
    objects = build(kubectl, overlay)
    namespace = _by(objects, "Namespace", "kubeloop")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for _owner, spec in pod_specs(objects):
        assert spec["securityContext"]["runAsNonRoot"] is True
    for _owner, container in containers(objects):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"requests", "limits"} <= set(container["resources"])


def test_overlays_set_each_environment(kubectl: str) -> None:
    dev, staging, prod = (build(kubectl, o) for o in OVERLAYS)
    for objects, env in ((dev, "dev"), (staging, "staging"), (prod, "prod")):
        for owner, values in _kubeloop_envs(objects).items():
            assert values["KUBELOOP_ENV"] == env, (env, owner)
    assert _env(staging, "kubeloop-server")["KUBELOOP_SHADOW_ENABLED"] == "true"
    assert "KUBELOOP_SHADOW_ENABLED" not in _env(prod, "kubeloop-server")
    hpa = {
        o: _by(build(kubectl, o), "HorizontalPodAutoscaler", "kubeloop-server")["spec"]
        for o in OVERLAYS
    }
    assert [(h["minReplicas"], h["maxReplicas"]) for h in hpa.values()] == [(1, 2), (2, 4), (3, 12)]
    assert _by(prod, "Deployment", "kubeloop-mlflow")["spec"]["replicas"] == 2


# What the chart is given for each overlay's environment: the overlays must configure every
# kubeloop process as the chart does there (its release flow included), with the base's values.
PROMETHEUS = "http://kube-prometheus-stack-prometheus.monitoring:9090"
CHART_SETTINGS = {
    "dev": {},
    "staging": {
        "environment": "staging",
        "rollout": {"phase": "staging", "prometheusUrl": PROMETHEUS},
        # production's MLflow is the registry both halves share (the same artifact moves on)
        "mlflow": {"enabled": False, "externalTrackingUri": "https://mlflow.internal.example.com"},
    },
    "prod": {
        "environment": "prod",
        "rollout": {"phase": "production", "prometheusUrl": PROMETHEUS},
        "server": {"settings": {"registry_poll_seconds": 30}},
        "mlflow": {
            "allowedHosts": ["mlflow.internal.example.com"],
            "ingressFrom": [{"ipBlock": {"cidr": "10.0.0.0/16"}}],
        },
    },
}
ON_PURPOSE = {"staging": {("kubeloop-server", "KUBELOOP_SHADOW_ENABLED")}}


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over another: maps merge, everything else replaces."""
    out = dict(base)
    for key, value in override.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if both else value
    return out


def _access(obj: dict[str, Any]) -> Any:
    """What an RBAC or admission object grants or checks, without its labels."""
    return obj.get("rules", obj.get("subjects", obj.get("spec")))


def _kubeloop_envs(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Owner name -> env of every container that runs kubeloop (it reads KUBELOOP_ENV)."""
    envs = {}
    for owner, container in containers(objects):
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
        if "KUBELOOP_ENV" in env:
            envs[owner["metadata"]["name"]] = env
    return envs


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_configures_kubeloop_as_the_chart_does_for_its_environment(
    kubectl: str, overlay: str
) -> None:
    values = load_values(BASE / "values.yaml")
    settings = CHART_SETTINGS[overlay]
    chart = render(_merged(values, settings))
    objects = build(kubectl, overlay)
    expected, got = _kubeloop_envs(chart), _kubeloop_envs(objects)
    assert set(got) == set(expected)
    for owner, env in expected.items():
        extra = {name for o, name in ON_PURPOSE.get(overlay, set()) if o == owner}
        assert {k: v for k, v in got[owner].items() if k not in extra} == env, owner
    # Who may do what: the same Roles, bindings and Job policy as the chart's.
    kinds = ("Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
    for kind in kinds:
        mine = {o["metadata"]["name"]: _access(o) for o in objects if o["kind"] == kind}
        assert mine == {o["metadata"]["name"]: _access(o) for o in chart if o["kind"] == kind}
    # The registry: whom it admits (hosts, network peers), where there is one.
    for kind, name in (("Deployment", "kubeloop-mlflow"), ("NetworkPolicy", "kubeloop-mlflow")):
        mine = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
        charts = [o for o in chart if o["kind"] == kind and o["metadata"]["name"] == name]
        assert len(mine) == len(charts), (kind, name)
    if any(o["metadata"]["name"] == "kubeloop-mlflow" for o in chart):
        hosts = "MLFLOW_SERVER_ALLOWED_HOSTS"
        assert _env(objects, "kubeloop-mlflow")[hosts] == _env(chart, "kubeloop-mlflow")[hosts]
        policy = _by(objects, "NetworkPolicy", "kubeloop-mlflow")["spec"]
        assert policy == _by(chart, "NetworkPolicy", "kubeloop-mlflow")["spec"]


def test_production_serves_and_rolls_out_the_released_model(kubectl: str) -> None:
    prod = _kubeloop_envs(build(kubectl, "prod"))
    assert {env.get("KUBELOOP_SERVED_MODEL") for env in prod.values()} == {"production"}
    assert prod["kubeloop-rollout"]["KUBELOOP_ROLLOUT_PHASE"] == "production"
    assert "KUBELOOP_PREDICT_TOKEN" not in prod["kubeloop-rollout"]
    staging = _kubeloop_envs(build(kubectl, "staging"))
    assert not any("KUBELOOP_SERVED_MODEL" in env for env in staging.values())
    assert staging["kubeloop-rollout"]["KUBELOOP_ROLLOUT_PHASE"] == "staging"


def test_prod_mlflow_uses_irsa_instead_of_static_s3_keys(kubectl: str) -> None:
    dev = _env(build(kubectl, "dev"), "kubeloop-mlflow")
    assert {"AWS_ACCESS_KEY_ID", "MLFLOW_S3_ENDPOINT_URL"} <= set(dev)
    staging = build(kubectl, "staging")  # production's MLflow is its registry: none of its own
    assert not [o for o in staging if o["metadata"]["name"] == "kubeloop-mlflow"]
    objects = build(kubectl, "prod")
    env = _env(objects, "kubeloop-mlflow")
    static = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"}
    assert not static & set(env)
    assert env["MLFLOW_ARTIFACTS_DESTINATION"] == "s3://kubeloop-prod-mlflow/artifacts"
    account = _by(objects, "ServiceAccount", "kubeloop-mlflow")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]


def test_every_patch_file_is_used() -> None:
    for overlay in OVERLAYS:
        folder = REPO / "manifests" / "overlays" / overlay
        used = {
            p["path"]
            for p in yaml.safe_load((folder / "kustomization.yaml").read_text())["patches"]
        }
        assert used == {p.name for p in folder.glob("*_patch.yaml")}, overlay
