# kubeloop-python (kubeloop/images.py PIPELINE_IMAGE): pipeline steps, the `kubeloop` CLI,
# the monitoring and materialization jobs, the MLflow tracking server and the Feast feature
# server. Build from the repository root:
#   buildah bud --layers -f docker/pipeline.Dockerfile -t ghcr.io/kubeloop/kubeloop-python:0.1.0 .
# (`make images`). BASE_IMAGE must be Debian bookworm with Python 3.11 (uv.lock); where no
# registry is reachable, docker/bookworm-base.sh makes one with debootstrap.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ARG UV_VERSION=0.13.9
# Optional: a CA bundle for a TLS-intercepting proxy, mounted at build time (docker/build.sh
# passes the host's with buildah); unset by default, and nothing of it stays in the image.
ARG PIP_CERT
ARG SSL_CERT_FILE
ENV UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_CACHE_DIR=/var/cache/uv
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir --quiet uv==${UV_VERSION}
WORKDIR /app
# Dependencies first, from the lock only: this layer is rebuilt when uv.lock changes, not the code.
COPY pyproject.toml uv.lock ./
# The workspace extra is JupyterLab (the chart's data-science workspace runs this image).
RUN --mount=type=cache,target=/var/cache/uv \
    /opt/uv/bin/uv sync --frozen --no-dev --extra workspace --no-install-project --python python3
COPY README.md ./
COPY kubeloop kubeloop
COPY components components
COPY pipelines pipelines
COPY serving serving
COPY monitoring monitoring
COPY feature_repo feature_repo
# The project itself goes to its own prefix, so a code change leaves the dependency layers alone.
RUN --mount=type=cache,target=/var/cache/uv \
    /opt/uv/bin/uv pip install --python /opt/venv/bin/python --no-deps --prefix /opt/kubeloop .

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="kubeloop-python" \
      org.opencontainers.image.description="kubeloop pipeline steps, CLI, jobs, MLflow and Feast servers" \
      org.opencontainers.image.source="https://github.com/kubeloop/kubeloop" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed non-root UID (the chart's podSecurityContext.runAsUser); HOME on the writable /tmp.
RUN echo "kubeloop:x:10001:10001:kubeloop:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "kubeloop:x:10001:" >> /etc/group
ENV PATH=/opt/kubeloop/bin:/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/kubeloop/lib/python3.11/site-packages \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/kubeloop /opt/kubeloop
WORKDIR /app
# The bundled example spec (values.yaml project.bundledSpec) and feature definitions.
COPY examples examples
COPY feature_repo feature_repo
USER 10001:10001
ENTRYPOINT ["python", "-m", "kubeloop"]
