"""Container images and ports: the one place code, Dockerfiles and the Helm chart take them from."""

from __future__ import annotations

REGISTRY = "ghcr.io/kubeloop"
VERSION = "0.1.0"


def image_name(registry: str, repository: str, tag: str) -> str:
    """``registry/repository:tag`` (the registry may carry a path: ``host:5000/team``)."""
    return f"{registry.rstrip('/')}/{repository}:{tag}"


# Pipeline steps and the monitoring job (docker/pipeline.Dockerfile). Compiled pipelines take
# the image from settings (KUBELOOP_PIPELINE_IMAGE_*), these are their defaults.
PIPELINE_REPOSITORY = "kubeloop-python"
PIPELINE_IMAGE = image_name(REGISTRY, PIPELINE_REPOSITORY, VERSION)
# The model server (docker/server.Dockerfile).
SERVER_IMAGE = f"{REGISTRY}/kubeloop-server:{VERSION}"
SERVER_PORT = 8080

# Pipeline steps on a cluster read their settings from these (the Helm chart creates them).
PIPELINE_ENV_CONFIGMAP = "kubeloop-pipeline-env"
PIPELINE_ENV_KEYS = (
    "KUBELOOP_ENV",
    "KUBELOOP_WORK_DIR",
    "KUBELOOP_MLFLOW_ARTIFACT_ROOT",
    "KUBELOOP_FEAST_ONLINE_STORE",
    "KUBELOOP_DVC_REMOTE",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_S3_ENDPOINT_URL",
)
PIPELINE_SECRET = "kubeloop-pipeline-secrets"
PIPELINE_SECRET_KEYS = (
    "KUBELOOP_FEAST_REGISTRY",  # a database URL with credentials
    "KUBELOOP_FEAST_OFFLINE_STORE",  # likewise (Feast's PostgreSQL offline store)
    "KUBELOOP_REDIS_URL",  # may carry a password
    "KUBELOOP_PREDICTION_LOG_URL",  # the ingest step reads production's labelled rows there
    "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
