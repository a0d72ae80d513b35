#!/usr/bin/env bash
# Builds the kubeloop images from docker/*.Dockerfile, named and tagged as kubeloop/images.py
# says (`make images`). Usage: docker/build.sh [pipeline|server ...]   (default: both)
#   BUILDER=buildah (default; rootful, --isolation=chroot, layer cache) or docker (for kind load)
#   BASE_IMAGE=...  overrides the Dockerfiles' base (e.g. docker/bookworm-base.sh's offline one)
#   PYTHON=...      the interpreter that reads kubeloop/images.py (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILDER="${BUILDER:-buildah}"
PYTHON="${PYTHON:-.venv/bin/python}"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(pipeline server)

image_for() {
  "$PYTHON" -c "from kubeloop import images; print({'pipeline': images.PIPELINE_IMAGE, 'server': images.SERVER_IMAGE}['$1'])"
}

args=()
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
# The host's CA bundle, for networks whose proxy re-signs TLS (pip and uv inside the build then
# trust what the host trusts). HOST_CA_BUNDLE= (empty) turns it off.
HOST_CA_BUNDLE="${HOST_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
volumes=()
if [ "$BUILDER" = buildah ] && [ -n "$HOST_CA_BUNDLE" ] && [ -s "$HOST_CA_BUNDLE" ]; then
  volumes+=(-v "$HOST_CA_BUNDLE:/run/host-ca.crt:ro")
  args+=(--build-arg PIP_CERT=/run/host-ca.crt --build-arg SSL_CERT_FILE=/run/host-ca.crt)
fi
# The host's uv cache (filled by `make setup`), mounted as the build's: wheels the host already
# has are not downloaded again. UV_HOST_CACHE= (empty) turns it off.
UV_HOST_CACHE="${UV_HOST_CACHE-$HOME/.cache/uv}"
if [ "$BUILDER" = buildah ] && [ -n "$UV_HOST_CACHE" ] && [ -d "$UV_HOST_CACHE" ]; then
  volumes+=(-v "$UV_HOST_CACHE:/var/cache/uv-host")
  args+=(--build-arg UV_CACHE_DIR=/var/cache/uv-host)
fi
for target in "${targets[@]}"; do
  image="$(image_for "$target")"
  echo "build: docker/$target.Dockerfile -> $image" >&2
  case "$BUILDER" in
    buildah)
      buildah bud --isolation=chroot --layers --pull=false "${volumes[@]}" "${args[@]}" \
        -f "docker/$target.Dockerfile" -t "$image" . >&2 ;;
    docker)
      docker build "${args[@]}" -f "docker/$target.Dockerfile" -t "$image" . >&2 ;;
    *) echo "unknown BUILDER=$BUILDER" >&2; exit 2 ;;
  esac
  echo "$image"
done
