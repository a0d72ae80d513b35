"""The chart feeds whatever compiles or submits pipelines in the cluster: the pipeline image
from the image values, the training triggers (schedule, new data) as CronJobs that submit to
KFP, and Feast's PostgreSQL offline store from a Secret reference, never an inlined password."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.k8s.chart import containers, kinds, render

REGISTRY = "registry.example.com:5000/team"

TRIGGERS = {
    "image": {"registry": REGISTRY, "tag": "2026.12.1"},
    "monitoring": {"kfpHost": "http://ml-pipeline.kubeflow:8888"},
    "server": {"predictionLog": {"existingSecret": "log-db", "existingSecretKey": "url"}},
    "pipelines": {
        "schedule": {"enabled": True, "cron": "0 3 * * 0"},
        "newData": {"enabled": True, "cron": "15 * * * *"},
        "dvcRemote": "s3://dvc/kubeloop",
        "s3EndpointUrl": "http://minio.storage:9000",
        "triggerSecret": "pipeline-s3",
    },
    "featureStore": {
        "enabled": True,
        "registry": {"existingSecret": "feast-db", "existingSecretKey": "registry"},
        "redis": {"address": "redis:6379"},
        "offlineStore": {"existingSecret": "feast-db", "existingSecretKey": "offline"},
    },
}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render(TRIGGERS)


def by_name(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for _, c in containers(objects)}


def test_processes_that_compile_pipelines_get_the_image_from_the_image_values() -> None:
    """The monitor (retraining), the trigger jobs and the workspace's notebooks compile the
    pipeline: every step then runs the image these values name, whatever registry and tag."""
    from kubeloop.settings import PlatformSettings

    workspace = {"enabled": True, "repository": {"url": "https://git.example.com/energy.git"}}
    found = by_name(render({**TRIGGERS, "workspace": workspace}))
    for name in ("monitor", "train-schedule", "train-new-data", "jupyterlab"):
        env = env_of(found[name])
        settings = PlatformSettings(
            pipeline_image_registry=env["KUBELOOP_PIPELINE_IMAGE_REGISTRY"],
            pipeline_image_repository=env["KUBELOOP_PIPELINE_IMAGE_REPOSITORY"],
            pipeline_image_tag=env["KUBELOOP_PIPELINE_IMAGE_TAG"],
        )
        assert settings.pipeline_image == f"{REGISTRY}/kubeloop-python:2026.12.1", name
        assert found[name]["image"] == settings.pipeline_image  # the job's own image, too


def test_the_pipeline_image_tag_defaults_to_the_charts_app_version() -> None:
    found = by_name(render({"monitoring": {"kfpHost": "http://kfp:8888"}}))
    env = env_of(found["monitor"])
    assert env["KUBELOOP_PIPELINE_IMAGE_TAG"] == found["monitor"]["image"].rsplit(":", 1)[1]


def test_training_triggers_are_cronjobs_that_submit_to_kfp_and_supersede(objects) -> None:
    jobs = {j["metadata"]["name"]: j for j in kinds(objects, "CronJob")}
    schedule, new_data = jobs["kubeloop-train-schedule"], jobs["kubeloop-train-new-data"]
    assert schedule["spec"]["schedule"] == "0 3 * * 0"
    assert new_data["spec"]["schedule"] == "15 * * * *"
    pod = schedule["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == [
        "kubeloop", "trigger", "schedule", "--host", "http://ml-pipeline.kubeflow:8888",
    ]  # fmt: skip
    new_pod = new_data["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert new_pod["containers"][0]["command"][:3] == ["kubeloop", "trigger", "new-data"]
    for job_pod in (pod, new_pod):
        env = env_of(job_pod["containers"][0])
        # The launch slot lives beside the prediction log: the same database as the monitor's.
        assert env["KUBELOOP_PREDICTION_LOG_URL"] == {
            "secretKeyRef": {"name": "log-db", "key": "url"}
        }
        assert job_pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "pipeline-s3"}}]
    new_env = env_of(new_pod["containers"][0])
    assert new_env["KUBELOOP_DVC_REMOTE"] == "s3://dvc/kubeloop"  # where trained rows are counted
    assert new_env["KUBELOOP_S3_ENDPOINT_URL"] == "http://minio.storage:9000"


def test_triggers_without_a_kfp_host_are_refused_naming_the_key() -> None:
    values = {**TRIGGERS, "monitoring": {"kfpHost": ""}}
    with pytest.raises(Exception, match="monitoring.kfpHost: pipelines.schedule.enabled"):
        render(values)


def test_feast_offline_store_is_a_secret_reference_never_an_inlined_url(objects) -> None:
    found = by_name(objects)
    for name in ("materialize", "server"):
        assert env_of(found[name])["KUBELOOP_FEAST_OFFLINE_STORE"] == {
            "secretKeyRef": {"name": "feast-db", "key": "offline"}
        }, name
    literal = [
        c["name"]
        for _, c in containers(objects)
        for e in c.get("env", [])
        if e["name"] == "KUBELOOP_FEAST_OFFLINE_STORE" and "value" in e
    ]
    assert literal == []
    assert "KUBELOOP_FEAST_OFFLINE_STORE" not in yaml.safe_dump_all(kinds(objects, "ConfigMap"))


def test_pipeline_steps_read_the_offline_store_from_the_pipeline_secret() -> None:
    """Steps get credentials from kubeloop-pipeline-secrets (the compiled pipeline mounts its
    keys, optional), never as parameters or ConfigMap values."""
    from kubeloop import images

    assert "KUBELOOP_FEAST_OFFLINE_STORE" in images.PIPELINE_SECRET_KEYS
    assert "KUBELOOP_FEAST_OFFLINE_STORE" not in images.PIPELINE_ENV_KEYS
