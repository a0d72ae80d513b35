#!/bin/sh
# uv, pinned (UV_VERSION), kept in the build's cache mount /opt/uv rather than in a layer:
# installed there on first use, then run with the arguments given. The settings every build
# step shares are here once.
set -eu
if [ "$(/opt/uv/bin/uv --version 2>/dev/null)" != "uv ${UV_VERSION}" ]; then
  rm -rf /opt/uv/*
  python3 -m venv /opt/uv
  /opt/uv/bin/pip install --no-cache-dir --quiet "uv==${UV_VERSION}"
fi
export UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
exec /opt/uv/bin/uv "$@"
