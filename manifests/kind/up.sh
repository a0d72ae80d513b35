#!/usr/bin/env bash
# `make kind-up`: a kind cluster with Kubeflow Pipelines (standalone), kube-prometheus-stack and
# the Pushgateway at the versions in versions.env, the kubeloop images built and loaded, and the
# chart installed with values-dev.yaml. Needs Docker, kind, kubectl and helm, and the network
# (GitHub for the KFP manifests, the chart registries, Docker Hub for the Bitnami subcharts).
#
# It does not wait for the model server: the server is ready only once a champion exists, and
# none does before the first training run, which needs this very install (MLflow, Feast, MinIO,
# KFP). It waits for everything else; `make kind-train` (train.sh) then trains through the
# cluster's KFP, promotes, materializes and runs `helm test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=manifests/kind/versions.env
source manifests/kind/versions.env
CLUSTER="${KIND_CLUSTER:-kubeloop}"
NAMESPACE="${NAMESPACE:-kubeloop}"
PYTHON="${PYTHON:-.venv/bin/python}"

if ! kind get clusters | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" \
    --config manifests/kind/cluster.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER"

echo "== Kubeflow Pipelines $KFP_VERSION (standalone)"
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$KFP_VERSION"
kubectl wait --for condition=established --timeout=120s crd/applications.app.k8s.io
kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$KFP_VERSION"

echo "== kube-prometheus-stack $KUBE_PROMETHEUS_STACK_VERSION, Pushgateway $PUSHGATEWAY_CHART_VERSION"
helm upgrade --install kube-prometheus-stack \
  oci://ghcr.io/prometheus-community/charts/kube-prometheus-stack \
  --version "$KUBE_PROMETHEUS_STACK_VERSION" --namespace monitoring --create-namespace \
  --set grafana.sidecar.dashboards.enabled=true \
  --set grafana.sidecar.dashboards.searchNamespace=ALL \
  --wait --timeout 10m
helm upgrade --install prometheus-pushgateway \
  oci://ghcr.io/prometheus-community/charts/prometheus-pushgateway \
  --version "$PUSHGATEWAY_CHART_VERSION" --namespace monitoring \
  --set serviceMonitor.enabled=true \
  --set serviceMonitor.additionalLabels.release=kube-prometheus-stack --wait

echo "== kubeloop images"
for image in $(BUILDER=docker PYTHON="$PYTHON" bash docker/build.sh); do
  kind load docker-image "$image" --name "$CLUSTER"
done

echo "== kubeloop chart (values-dev.yaml)"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NAMESPACE" --overwrite pod-security.kubernetes.io/warn=restricted
NAMESPACE="$NAMESPACE" bash manifests/kind/dev-secret.sh
helm dependency build helm/kubeloop
helm upgrade --install kubeloop helm/kubeloop --namespace "$NAMESPACE" \
  -f helm/kubeloop/values-dev.yaml --timeout 15m

echo "== waiting for everything but the model server (it needs a champion: make kind-train)"
for kind in statefulset deployment; do
  for object in $(kubectl -n "$NAMESPACE" get "$kind" -o name | grep -v -- '-server$'); do
    kubectl -n "$NAMESPACE" rollout status "$object" --timeout=15m
  done
done
kubectl -n kubeflow wait --for=condition=Available deployment --all --timeout=15m
cat <<MSG
kubeloop is up; the model server waits for a first model. Next:
  make kind-train     # train through the cluster's KFP, promote, materialize, helm test
MSG
