#!/usr/bin/env bash
# Creates, once each (existing ones are kept: the bundled databases already use them):
#  - `kubeloop-dev` in $NAMESPACE, which values-dev.yaml points every credential at, with fresh
#    random passwords; host names are the Bitnami subcharts' Services of the release "kubeloop";
#  - `kubeloop-pipeline-secrets` in kubeflow (kubeloop/images.py PIPELINE_SECRET): what KFP's
#    pipeline steps need, the Feast registry and Redis, the prediction log (labelled rows for
#    training) and MinIO for DVC.
set -euo pipefail
NAMESPACE="${NAMESPACE:-kubeloop}"
rand() { head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24; }

if ! kubectl -n "$NAMESPACE" get secret kubeloop-dev >/dev/null 2>&1; then
  pg="$(rand)"; redis="$(rand)"; minio="$(rand)"
  db="postgresql+psycopg://kubeloop:${pg}@kubeloop-postgresql:5432"
  kubectl -n "$NAMESPACE" create secret generic kubeloop-dev \
    --from-literal=api-token="$(rand)" \
    --from-literal=admin-token="$(rand)" \
    --from-literal=password="$pg" \
    --from-literal=postgres-password="$(rand)" \
    --from-literal=mlflow-backend-store-uri="${db}/mlflow" \
    --from-literal=feast-registry-url="${db}/feast" \
    --from-literal=feast-offline-store-url="${db}/feast_offline" \
    --from-literal=prediction-log-url="${db}/predictions" \
    --from-literal=redis-password="$redis" \
    --from-literal=redis-url="kubeloop-redis-master:6379,password=${redis}" \
    --from-literal=root-user=kubeloop \
    --from-literal=root-password="$minio"
fi
# The admin token (KUBELOOP_ADMIN_TOKEN) came later: add it to a Secret made before.
if [ -z "$(kubectl -n "$NAMESPACE" get secret kubeloop-dev -o 'jsonpath={.data.admin-token}')" ]; then
  kubectl -n "$NAMESPACE" patch secret kubeloop-dev --type merge \
    -p "{\"stringData\": {\"admin-token\": \"$(rand)\"}}"
fi

# Feast's PostgreSQL offline store came later too (the pipeline's steps share nothing but services).
if [ -z "$(kubectl -n "$NAMESPACE" get secret kubeloop-dev -o 'jsonpath={.data.feast-offline-store-url}')" ]; then
  pg="$(kubectl -n "$NAMESPACE" get secret kubeloop-dev -o 'jsonpath={.data.password}' | base64 -d)"
  kubectl -n "$NAMESPACE" patch secret kubeloop-dev --type merge -p "{\"stringData\": {\"feast-offline-store-url\": \"postgresql+psycopg://kubeloop:${pg}@kubeloop-postgresql:5432/feast_offline\"}}"
fi

pw() { kubectl -n "$NAMESPACE" get secret kubeloop-dev -o "jsonpath={.data.$1}" | base64 -d; }
host="kubeloop-postgresql.${NAMESPACE}.svc"
if ! kubectl -n kubeflow get secret kubeloop-pipeline-secrets >/dev/null 2>&1; then
  kubectl -n kubeflow create secret generic kubeloop-pipeline-secrets \
    --from-literal=KUBELOOP_FEAST_REGISTRY="postgresql+psycopg://kubeloop:$(pw password)@${host}:5432/feast" \
    --from-literal=KUBELOOP_FEAST_OFFLINE_STORE="postgresql+psycopg://kubeloop:$(pw password)@${host}:5432/feast_offline" \
    --from-literal=KUBELOOP_REDIS_URL="kubeloop-redis-master.${NAMESPACE}.svc:6379,password=$(pw redis-password)" \
    --from-literal=KUBELOOP_PREDICTION_LOG_URL="postgresql+psycopg://kubeloop:$(pw password)@${host}:5432/predictions" \
    --from-literal=AWS_ACCESS_KEY_ID="$(pw root-user)" \
    --from-literal=AWS_SECRET_ACCESS_KEY="$(pw root-password)"
fi
if [ -z "$(kubectl -n kubeflow get secret kubeloop-pipeline-secrets -o 'jsonpath={.data.KUBELOOP_FEAST_OFFLINE_STORE}')" ]; then
  kubectl -n kubeflow patch secret kubeloop-pipeline-secrets --type merge -p "{\"stringData\": {\"KUBELOOP_FEAST_OFFLINE_STORE\": \"postgresql+psycopg://kubeloop:$(pw password)@${host}:5432/feast_offline\"}}"
fi
