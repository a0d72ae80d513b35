#!/usr/bin/env bash
# Builds the offline base image for docker/*.Dockerfile: Debian bookworm (Python 3.11, as
# uv.lock requires) made with debootstrap from Debian's own mirror, imported into the local
# containers storage as $BASE_IMAGE. For machines that cannot pull python:3.11-slim-bookworm.
# Idempotent: the rootfs tarball is cached in $KUBELOOP_CACHE (default /var/cache/kubeloop) and
# the image is imported only when missing. Needs root, debootstrap and podman.
set -euo pipefail
BASE_IMAGE="${BASE_IMAGE:-localhost/kubeloop/bookworm-python:3.11}"
CACHE="${KUBELOOP_CACHE:-/var/cache/kubeloop}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TARBALL="$CACHE/bookworm-python3.11-rootfs.tar"

if podman image exists "$BASE_IMAGE" 2>/dev/null; then
  echo "$BASE_IMAGE"
  exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
  root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  # minbase: essential packages only, plus the interpreter, venv (ensurepip) and CA certificates.
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >&2
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
         "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar --numeric-owner -C "$root" -cf "$TARBALL.partial" .
  mv "$TARBALL.partial" "$TARBALL"
fi
podman import \
  --change 'CMD ["/bin/bash"]' \
  --change 'ENV LANG=C.UTF-8' \
  "$TARBALL" "$BASE_IMAGE" >&2
echo "$BASE_IMAGE"
