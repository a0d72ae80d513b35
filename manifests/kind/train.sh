#!/usr/bin/env bash
# `make kind-train`: the first model on the kind cluster of `make kind-up`, trained the way a
# cluster trains: the sample data uploaded to the cluster's MinIO, the pipeline submitted to the
# cluster's KFP (`--host`) and waited for, the challenger promoted, Feast's online store
# materialized from the offline rows in PostgreSQL, then `helm test` (readiness, a prediction
# from features and one by entity id from the cluster's own Feast).
set -euo pipefail
cd "$(dirname "$0")/../.."
NAMESPACE="${NAMESPACE:-kubeloop}"
KUBELOOP="${KUBELOOP:-.venv/bin/kubeloop}"
PYTHON="${PYTHON:-.venv/bin/python}"
ROWS="${ROWS:-20000}"
WAIT_SECONDS="${WAIT_SECONDS:-3600}"
SOURCE=s3://raw/building_energy.parquet

forwards=()
cleanup() { for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
forward() {  # namespace service local:remote
  kubectl -n "$1" port-forward "svc/$2" "$3" >"/tmp/port-forward-$2.log" 2>&1 &
  forwards+=($!)
}
forward "$NAMESPACE" kubeloop-mlflow 5000:5000
forward "$NAMESPACE" kubeloop-minio 9000:9000
forward kubeflow ml-pipeline 8888:8888
sleep 5

secret() { kubectl -n "$NAMESPACE" get secret kubeloop-dev -o "jsonpath={.data.$1}" | base64 -d; }
export MLFLOW_TRACKING_URI=http://localhost:5000
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
AWS_ACCESS_KEY_ID="$(secret root-user)"
AWS_SECRET_ACCESS_KEY="$(secret root-password)"
export KUBELOOP_S3_ENDPOINT_URL=http://localhost:9000

echo "== sample data ($ROWS rows) -> $SOURCE (the cluster's MinIO)"
work="$(mktemp -d)"
"$KUBELOOP" data generate --rows "$ROWS" --out "$work/building_energy.parquet"
"$PYTHON" - "$work/building_energy.parquet" "$SOURCE" <<'PY'
import sys

import fsspec

from kubeloop.settings import PlatformSettings

local, url = sys.argv[1], sys.argv[2]
fs, path = fsspec.core.url_to_fs(url, **PlatformSettings().storage_options(url))
fs.put(local, path)
print(f"uploaded {local} to {url}")
PY

echo "== training through the cluster's KFP (submitted with --host, waited for)"
"$KUBELOOP" run training --host http://localhost:8888 --source "$SOURCE" \
  --run-name kind-first-model --wait "$WAIT_SECONDS"

echo "== promote the challenger (the server loads it as champion)"
"$KUBELOOP" promote challenger --approve --approver kind-train

echo "== materialize Feast's online store from the offline rows (the CronJob, once now)"
job="kubeloop-materialize-$(date +%s)"
kubectl -n "$NAMESPACE" create job --from=cronjob/kubeloop-materialize "$job"
kubectl -n "$NAMESPACE" wait --for=condition=complete "job/$job" --timeout=10m

echo "== the model server, then helm test"
kubectl -n "$NAMESPACE" rollout status deployment/kubeloop-server --timeout=10m
helm test kubeloop -n "$NAMESPACE" --logs --timeout 5m
