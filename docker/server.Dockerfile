# kubeloop-server (kubeloop/images.py SERVER_IMAGE): the model server, `python -m serving`.
# Build from the repository root:
#   buildah bud --layers -f docker/server.Dockerfile -t ghcr.io/kubeloop/kubeloop-server:0.1.0 .
# (`make images`). Only the dependencies serving needs are installed, each at its uv.lock
# version: the pipeline-only ones (EXCLUDE) stay out, which keeps the image smaller.
#
# One stage, as docker/pipeline.Dockerfile (why: there): uv lives in a build cache mount.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="kubeloop-server" \
      org.opencontainers.image.description="kubeloop model server" \
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
# Top-level dependencies of pyproject.toml that serving never imports.
ARG EXCLUDE="kfp kfp-kubernetes evidently dvc"
RUN echo "kubeloop:x:10001:10001:kubeloop:/tmp:/usr/sbin/nologin" >> /etc/passwd \
 && echo "kubeloop:x:10001:" >> /etc/group
ENV PATH=/opt/kubeloop/bin:/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/kubeloop/lib/python3.11/site-packages \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# Dependencies first, pinned by the lock (as constraints): rebuilt only when the lock changes.
COPY pyproject.toml uv.lock docker/uv.sh ./
RUN --mount=type=cache,target=/var/cache/uv --mount=type=cache,target=/opt/uv \
    sh uv.sh export --frozen --no-dev --no-emit-project --no-hashes -o /tmp/constraints.txt \
 && python3 -c 'import sys, tomllib, re; \
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]; \
skip = set(sys.argv[1:]); \
print("\n".join(d for d in deps if re.split(r"[\[=<>~ ]", d)[0] not in skip))' ${EXCLUDE} \
    > /tmp/requirements.txt \
 && python3 -m venv --without-pip /opt/venv \
 && sh uv.sh pip install --python /opt/venv/bin/python -r /tmp/requirements.txt \
    -c /tmp/constraints.txt \
 && rm /tmp/requirements.txt /tmp/constraints.txt
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
COPY examples examples
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "serving"]
