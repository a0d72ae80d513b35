# kubeloop-python (kubeloop/images.py PIPELINE_IMAGE): pipeline steps, the `kubeloop` CLI,
# the monitoring and materialization jobs, the MLflow tracking server and the Feast feature
# server. Build from the repository root:
#   buildah bud --layers -f docker/pipeline.Dockerfile -t ghcr.io/kubeloop/kubeloop-python:0.1.0 .
# (`make images`). BASE_IMAGE must be Debian bookworm with Python 3.11 (uv.lock); where no
# registry is reachable, docker/bookworm-base.sh makes one with debootstrap.
#
# One stage: the environment is built where it stays. uv itself lives in a build cache mount
# (/opt/uv), not in a layer, so no copy of the 1.8 GB environment from a builder stage is needed
# (that copy and its commit took a minute of every cold build).
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="kubeloop-python" \
      org.opencontainers.image.description="kubeloop pipeline steps, CLI, jobs, MLflow and Feast servers" \
      org.opencontainers.image.source="https://github.com/kubeloop/kubeloop" \
      org.opencontainers.image.licenses="Apache-2.0"
ARG UV_VERSION=0.13.9
# Optional: a CA bundle for a TLS-intercepting proxy, mounted at build time (docker/build.sh
# passes the host's with buildah); unset by default, and nothing of it stays in the image.
ARG PIP_CERT
ARG SSL_CERT_FILE
# uv's wheel cache: a build cache mount by default; docker/build.sh points it at the host's own
# uv cache when it has one (mounted), so a machine that ran `make setup` downloads nothing again.
ARG UV_CACHE_DIR=/var/cache/uv
# A fixed non-root UID (the chart's podSecurityContext.runAsUser); HOME on the writable /tmp.
RUN echo "kubeloop:x:10001:10001:kubeloop:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "kubeloop:x:10001:" >> /etc/group
ENV PATH=/opt/kubeloop/bin:/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/kubeloop/lib/python3.11/site-packages \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# Dependencies first, from the lock only: this layer is rebuilt when uv.lock changes, not the code.
COPY pyproject.toml uv.lock docker/uv.sh ./
RUN --mount=type=cache,target=/var/cache/uv --mount=type=cache,target=/opt/uv \
    UV_PROJECT_ENVIRONMENT=/opt/venv sh uv.sh sync --frozen --no-dev --extra workspace \
      --no-install-project --python python3
COPY README.md ./
COPY kubeloop kubeloop
COPY components components
COPY pipelines pipelines
COPY serving serving
COPY monitoring monitoring
COPY feature_repo feature_repo
# The project itself goes to its own prefix, so a code change leaves the dependency layers alone.
RUN --mount=type=cache,target=/var/cache/uv --mount=type=cache,target=/opt/uv \
    sh uv.sh pip install --python /opt/venv/bin/python --no-deps --prefix /opt/kubeloop . \
 && rm -rf /app/*
# The bundled example spec (values.yaml project.bundledSpec) and feature definitions.
COPY examples examples
COPY feature_repo feature_repo
USER 10001:10001
ENTRYPOINT ["python", "-m", "kubeloop"]
