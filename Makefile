# kubeloop developer entry points. `make help` lists them; `make ci` (lint and tests) is what CI runs.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON := $(PYTHON)
# Some machines set this; every kfp.local step would then recompile all its imports (a pipeline
# run took 94 s with it, 50 s without).
unexport PYTHONDONTWRITEBYTECODE

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --extra workspace  # JupyterLab too: the chart's workspace runs it
	touch $@

setup: $(VENV)/.synced ## Build .venv from uv.lock (installs uv from PyPI when missing)

test: setup ## Run the test suite (unit, integration, pipeline; services when present)
	bash tests/k8s/install_tools.sh debian || echo "make test: container tools missing; their tests skip (or fail in CI)" >&2
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: setup ## Unit tests only
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

demo: setup ## Run the whole loop on the embedded default, with progress
	$(BIN)/python -m kubeloop.demo

PACKAGES := kubeloop components pipelines serving monitoring feature_repo

lint: setup ## Ruff (lint and format) over all Python and the notebooks, mypy over every package
	$(BIN)/ruff check $(PACKAGES) tests bench notebooks
	$(BIN)/ruff format --check $(PACKAGES) tests bench notebooks
	$(BIN)/mypy $(PACKAGES)

format: setup ## Apply ruff's formatting and safe fixes
	$(BIN)/ruff format $(PACKAGES) tests bench notebooks
	$(BIN)/ruff check --fix $(PACKAGES) tests bench notebooks

ci: lint test ## What CI runs (.ci/run): lint, then the whole test suite

bench: setup ## Benchmarks (figures go to docs/benchmarks.md by hand)
	$(BIN)/python bench/pipeline.py

bench-serving: setup ## Serving benchmark: kubeloop vs mlflow serve and KServe with wrk (~25 min)
	$(BIN)/python bench/serving/run.py

compile: setup ## Regenerate the golden pipeline IR YAML
	$(BIN)/kubeloop compile --out pipelines/training.yaml

lock: ## Refresh uv.lock after editing pyproject.toml
	$(UV) lock

clean: ## Remove local state (the work folder) and build leftovers
	rm -rf .kubeloop .pytest_cache

alert-rules: setup ## Regenerate monitoring/alerts/kubeloop-monitoring.rules.yaml: the chart's PrometheusRule as Helm renders it
	$(BIN)/python -m tests.utils.alert_rules

observability-test: setup ## Dashboards and alerts against a real Prometheus, Pushgateway, Alertmanager (docs/observability.md)
	bash tests/observability/install_tools.sh
	$(BIN)/pytest tests/observability $(PYTEST_ARGS)

.PHONY: help setup test test-fast demo lint format ci bench compile lock clean alert-rules observability-test

# --- Kubernetes: chart, manifests, images, kind (docs/kubernetes.md) ---
KIND_CLUSTER ?= kubeloop

images: setup ## Build the images of docker/ as kubeloop/images.py names them (BUILDER=buildah|docker, BASE_IMAGE=...)
	PYTHON=$(BIN)/python bash docker/build.sh

chart-test: setup ## Render, lint and validate the Helm chart, kustomize overlays and Dockerfiles (no cluster)
	bash tests/k8s/install_tools.sh
	$(BIN)/pytest tests/k8s -m "not slow" $(PYTEST_ARGS)

cluster-test: setup ## The pipeline with every step in its own container (podman, kfp.local DockerRunner) and a monitor retraining
	bash tests/k8s/install_tools.sh debian
	$(BIN)/pytest tests/cluster $(PYTEST_ARGS)

kind-up: setup ## kind cluster with KFP, kube-prometheus-stack, the images and the chart, all but the model server waited for (needs Docker, kind, helm)
	KIND_CLUSTER=$(KIND_CLUSTER) PYTHON=$(BIN)/python bash manifests/kind/up.sh

kind-train: setup ## First model on the kind cluster: sample data to MinIO, a KFP run (--host, waited for), promote, materialize, helm test
	PYTHON=$(BIN)/python KUBELOOP=$(BIN)/kubeloop bash manifests/kind/train.sh

kind-down: ## Delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

.PHONY: images chart-test cluster-test kind-up kind-train kind-down
