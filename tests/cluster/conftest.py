"""The cluster-faithful harness: podman's Docker-compatible API for kfp.local's DockerRunner,
the pipeline image (built once per session by tests/utils/images.py), and the
services a cluster's steps reach: PostgreSQL, Redis, an S3-compatible server (moto) and an
MLflow tracking server with proxied artifacts. Everything runs on this machine; the steps'
containers use host networking to reach it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.utils import services

# The session-wide image fixtures (one build for tests/k8s and tests/cluster).
from tests.utils.images import base_image, build, container_tools  # noqa: F401
from tests.utils.mlflow_server import mlflow_server
from tests.utils.s3 import CREDENTIALS, S3Server, s3_server

REDIS_DB = 6


@pytest.fixture(scope="session")
def pipeline_image(base_image: str) -> str:  # noqa: F811
    return build("pipeline", base_image)


@pytest.fixture(scope="session")
def docker_host(container_tools, tmp_path_factory) -> Iterator[str]:  # noqa: F811
    """``podman system service`` on a private socket; DOCKER_HOST for the docker SDK."""
    import docker

    sock = tmp_path_factory.mktemp("podman") / "podman.sock"
    url = f"unix://{sock}"
    proc = subprocess.Popen(
        ["podman", "system", "service", "--time=0", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                docker.DockerClient(base_url=url).ping()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("podman system service did not start") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass(frozen=True)
class Platform:
    s3: S3Server
    mlflow_url: str
    env: dict[str, str]  # what the chart's ConfigMap and Secret would hold, plus DOCKER_HOST
    offline_url: str


@pytest.fixture(scope="module")
def platform(docker_host: str, tmp_path_factory) -> Iterator[Platform]:
    log = tmp_path_factory.mktemp("mlflow") / "mlflow.log"
    with (
        s3_server("raw", "datasets", "mlflow") as s3,
        services.postgres_database() as backend,
        services.postgres_database() as registry,
        services.postgres_database() as offline,
        services.postgres_database() as prediction_log,
        services.redis_db(REDIS_DB) as redis_url,
        mlflow_server(backend, s3, "s3://mlflow/artifacts", log) as mlflow_url,
    ):
        env = {
            **CREDENTIALS,
            "DOCKER_HOST": docker_host,
            "MLFLOW_TRACKING_URI": mlflow_url,
            "KUBELOOP_FEAST_REGISTRY": registry,
            "KUBELOOP_FEAST_OFFLINE_STORE": offline,
            "KUBELOOP_FEAST_ONLINE_STORE": "redis",
            "KUBELOOP_REDIS_URL": redis_url,
            "KUBELOOP_DVC_REMOTE": "s3://datasets/dvc",
            "KUBELOOP_S3_ENDPOINT_URL": s3.endpoint,
            # The server's log, which monitoring and the ingest step of a retraining read.
            "KUBELOOP_PREDICTION_LOG_URL": prediction_log,
        }
        yield Platform(s3=s3, mlflow_url=mlflow_url, env=env, offline_url=offline)


def environ_with(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without stray KUBELOOP_* settings, plus ``env``."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KUBELOOP_", "MLFLOW_")) or k == "KUBELOOP_REQUIRE_SERVICES"
    }
    return {**base, **env}
