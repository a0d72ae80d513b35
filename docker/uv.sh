#!/bin/sh
# uv, pinned (UV_VERSION), kept in the build's cache mount /opt/uv rather than in a layer:
# installed there on first use (into a fresh folder renamed into place, so builds sharing the
# cache never see half an install), then run with the arguments given. The settings every build
# step shares are here once.
set -eu
home="/opt/uv/${UV_VERSION}"
if [ ! -x "$home/bin/uv" ]; then
  fresh=$(mktemp -d /opt/uv/.install.XXXXXX)
  python3 -m venv "$fresh"
  "$fresh/bin/pip" install --no-cache-dir --quiet "uv==${UV_VERSION}"
  mv -T "$fresh" "$home" 2>/dev/null || rm -rf "$fresh" # another build was first
fi
export UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
exec "$home/bin/uv" "$@"
