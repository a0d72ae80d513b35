"""Container images and ports: the one place code, Dockerfiles and the Helm chart take them from."""

from __future__ import annotations

REGISTRY = "ghcr.io/kubeloop"
VERSION = "0.1.0"

# Pipeline steps and the monitoring job (docker/pipeline.Dockerfile).
PIPELINE_IMAGE = f"{REGISTRY}/kubeloop-python:{VERSION}"
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
    "KUBELOOP_REDIS_URL",  # may carry a password
    "MLFLOW_TRACKING_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
