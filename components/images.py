"""Container images and ports: the one place code, Dockerfiles and the Helm chart take them from."""

from __future__ import annotations

REGISTRY = "ghcr.io/kubeloop"
VERSION = "0.1.0"

# Pipeline steps and the monitoring job (docker/pipeline.Dockerfile).
PIPELINE_IMAGE = f"{REGISTRY}/kubeloop-python:{VERSION}"
# The model server (docker/server.Dockerfile).
SERVER_IMAGE = f"{REGISTRY}/kubeloop-server:{VERSION}"
SERVER_PORT = 8080
