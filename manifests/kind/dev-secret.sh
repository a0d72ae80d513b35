#!/usr/bin/env bash
# Creates the Secret `kubeloop-dev` that values-dev.yaml points every credential at, with fresh
# random passwords, once (an existing Secret is kept: the bundled databases already use it).
# The host names are the Bitnami subcharts' Services for the release name "kubeloop".
set -euo pipefail
NAMESPACE="${NAMESPACE:-kubeloop}"
if kubectl -n "$NAMESPACE" get secret kubeloop-dev >/dev/null 2>&1; then
  echo "secret/kubeloop-dev exists"
  exit 0
fi
rand() { head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24; }
pg="$(rand)"; redis="$(rand)"; minio="$(rand)"
db="postgresql+psycopg://kubeloop:${pg}@kubeloop-postgresql:5432"
kubectl -n "$NAMESPACE" create secret generic kubeloop-dev \
  --from-literal=api-token="$(rand)" \
  --from-literal=password="$pg" \
  --from-literal=postgres-password="$(rand)" \
  --from-literal=mlflow-backend-store-uri="${db}/mlflow" \
  --from-literal=feast-registry-url="${db}/feast" \
  --from-literal=prediction-log-url="${db}/predictions" \
  --from-literal=redis-password="$redis" \
  --from-literal=redis-url="kubeloop-redis-master:6379,password=${redis}" \
  --from-literal=root-user=kubeloop \
  --from-literal=root-password="$minio"
