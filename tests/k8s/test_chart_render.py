"""The chart renders and lints with Helm's own Go code, and bad values fail naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.k8s.chart import (
    CHART,
    KUBE_VERSIONS,
    VALUES_FILES,
    kinds,
    load_values,
    one,
    render,
    render_files,
    render_scenario,
    scenario_id,
)

# The one lint finding allowed: Bitnami subcharts are declared, not vendored (see
# docs/kubernetes.md: `helm dependency build` fetches them where a registry is reachable).
MISSING_DEPENDENCIES = "chart directory is missing these dependencies: postgresql,redis,minio"


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=scenario_id)
def test_chart_renders_every_scenario(values_file: Path | None) -> None:
    objects = render_scenario(values_file)
    assert objects, "nothing rendered"
    for obj in objects:
        assert obj["metadata"]["name"], obj
        assert obj["metadata"].get("namespace") in (None, "kubeloop", "kubeflow", "ml-pipelines"), (
            obj["metadata"]
        )


@pytest.mark.parametrize("values_file", VALUES_FILES, ids=scenario_id)
def test_chart_lints_without_errors(values_file: Path | None) -> None:
    import helm_python as helm

    for version in KUBE_VERSIONS:
        report = helm.lint(CHART, load_values(values_file), kube_version=f"v{version}.0")
        assert report["errors"] == [], report
        findings = {m["error"] for m in report["messages"] if m["severity"] >= 2}
        assert findings <= {MISSING_DEPENDENCIES}, findings


def test_defaults_are_a_working_dev_install_without_third_party_services() -> None:
    objects = render()
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert ("Deployment", "kubeloop-server") in names
    assert ("Deployment", "kubeloop-mlflow") in names
    assert ("CronJob", "kubeloop-monitor") in names
    # Off by default: what needs third-party CRDs or services.
    assert not {kind for kind, _ in names} & {"ServiceMonitor", "PrometheusRule", "Ingress"}
    assert ("Deployment", "kubeloop-feast") not in names


def test_notes_say_how_to_reach_the_server_and_check_the_install() -> None:
    notes = render_files()["kubeloop/templates/NOTES.txt"]
    assert "port-forward svc/kubeloop-server" in notes
    assert "helm test kubeloop" in notes
    assert "emptyDir" in notes  # the dev-only MLflow store is called out
    # People with only a kubeloop role cannot port-forward: the proxy path the notes give is
    # one the data scientists' Role grants
    proxy = "/services/kubeloop-mlflow:http/proxy"
    assert f"localhost:8001/api/v1/namespaces/kubeloop{proxy}" in notes
    [role] = [
        r
        for r in kinds(render(), "Role")
        if r["metadata"]["name"] == "kubeloop-data-scientist"
        and r["metadata"]["namespace"] == "kubeloop"
    ]
    [rule] = [
        r
        for r in role["rules"]
        if r["resources"] == ["services/proxy"] and "kubeloop-mlflow:http" in r["resourceNames"]
    ]
    assert "get" in rule["verbs"]


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"environment": "qa"}, "/environment"),
        ({"server": {"replicas": 0}}, "/server/replicas"),
        ({"server": {"autoscaling": {"maxReplica": 3}}}, "/server/autoscaling"),
        ({"server": {"resources": {"limits": None}}}, "/server/resources"),  # null drops a default
        ({"mlflow": {"artifacts": {"destination": "my-bucket"}}}, "/mlflow/artifacts/destination"),
        ({"monitoring": {"schedule": "every hour"}}, "/monitoring/schedule"),
        (
            {"server": {"predictionLog": {"retention": {"keepDays": 0}}}},
            "/server/predictionLog/retention/keepDays",
        ),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"server": {"auth": {"existingSecret": "Not_A_Name"}}}, "/server/auth/existingSecret"),
        ({"metrics": {"prometheusRule": {"errorRatio": 5}}}, "/metrics/prometheusRule/errorRatio"),
        ({"typo": True}, "typo"),
    ],
)
def test_schema_rejects_bad_values_naming_the_key(values: dict, key: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmValuesError) as excinfo:
        render(values)
    assert key in str(excinfo.value)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"environment": "prod"}, "server.auth.existingSecret"),
        (
            {"environment": "staging", "server": {"auth": {"existingSecret": "t"}}},
            "server.predictionLog.existingSecret",
        ),
        ({"environment": "prod"}, "mlflow.backendStore.existingSecret"),
        ({"environment": "prod"}, "mlflow.artifacts.destination"),
        ({"environment": "prod"}, "mlflow.auth.existingSecret"),
        (
            {
                "environment": "staging",
                "featureStore": {
                    "enabled": True,
                    "registry": {"existingSecret": "r"},
                    "redis": {"address": "redis:6379"},
                },
            },
            "featureStore.offlineStore.existingSecret",
        ),
        ({"mlflow": {"replicas": 2}}, "mlflow.replicas"),
        ({"mlflow": {"enabled": False}}, "mlflow.externalTrackingUri"),
        ({"featureStore": {"enabled": True}}, "featureStore.registry.existingSecret"),
        (
            {"featureStore": {"enabled": True, "registry": {"existingSecret": "r"}}},
            "featureStore.redis.address",
        ),
        (
            {"server": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
            "server.autoscaling.minReplicas",
        ),
        ({"server": {"ingress": {"enabled": True, "host": ""}}}, "server.ingress.host"),
        (
            {"rollout": {"enabled": True}, "server": {"auth": {"existingSecret": "predict"}}},
            "server.auth.adminExistingSecret",
        ),
    ],
)
def test_inconsistent_values_fail_naming_the_key(values: dict, key: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmRenderError) as excinfo:
        render(values)
    assert key in str(excinfo.value)


def test_every_error_is_reported_at_once() -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmRenderError) as excinfo:
        render({"environment": "prod"})
    message = str(excinfo.value)
    assert message.count("existingSecret") >= 3, message


def test_the_log_retention_job_prunes_the_shared_log_only() -> None:
    """Daily, on the prediction log's database, with keepDays; not where the log is the dev
    server's own SQLite file, nor when turned off."""
    log = {"existingSecret": "kubeloop-databases", "existingSecretKey": "prediction-log-url"}
    job = one(
        render({"server": {"predictionLog": {**log, "retention": {"keepDays": 30}}}}),
        "CronJob",
        "kubeloop-log-retention",
    )
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kubeloop", "log", "prune", "--keep-days", "30"]
    url = next(e for e in container["env"] if e["name"] == "KUBELOOP_PREDICTION_LOG_URL")
    assert url["valueFrom"]["secretKeyRef"] == {
        "name": log["existingSecret"],
        "key": log["existingSecretKey"],
    }
    off = {"server": {"predictionLog": {**log, "retention": {"enabled": False}}}}
    for values in ({}, off):
        names = {o["metadata"]["name"] for o in kinds(render(values), "CronJob")}
        assert "kubeloop-log-retention" not in names
