#!/usr/bin/env bash
# Installs what the observability tests need and the machine lacks; idempotent (installs only
# what is missing), so the tests, `make observability-test` and CI on a fresh machine all call it.
#   Debian: prometheus (prometheus + promtool), prometheus-pushgateway, prometheus-alertmanager.
# The packages' services are never started: the tests run the binaries as plain processes on
# 127.0.0.1 with their own flags, and a policy-rc.d keeps apt from starting them where the
# machine has none (removed again afterwards).
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# command -> Debian package
declare -A want=(
  [prometheus]=prometheus [promtool]=prometheus
  [prometheus-pushgateway]=prometheus-pushgateway
  [prometheus-alertmanager]=prometheus-alertmanager [amtool]=prometheus-alertmanager
)
missing=()
for cmd in "${!want[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${want[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
  trap 'as_root rm -f "$policy"' EXIT
fi
echo "install_tools: apt-get install ${missing[*]}" >&2
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  "${missing[@]}" >/dev/null
