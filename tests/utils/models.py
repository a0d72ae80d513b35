"""Trained and registered models for tests and benchmarks: one way to make each.

``train_model`` fits and logs the spec's Pipeline with the train step's own function
(components/train/core.py) on the features the spec's transform makes from raw readings, the
most recent rows held out and scored as the pipeline's evaluation does, so the MLflow run holds
the reference sample and ``test_*`` metrics as after a pipeline run. ``register_model``
registers it with the registry's rules (``challenger``) and, for a champion, promotes it.
Every fixture that needs a model composes these two: the integration server's seeded store,
the monitoring job's champion, the server image test's store (tests/k8s/train_champion.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec


@dataclass(frozen=True)
class TrainedModel:
    run_id: str
    model_uri: str
    features: list[str]
    model: Any  # the fitted Pipeline


@dataclass(frozen=True)
class RegisteredModel:
    version: str  # registry number
    label: str  # V-name


def train_model(
    raw: pd.DataFrame,
    spec: ProjectSpec,
    settings: PlatformSettings,
    *,
    params: Mapping[str, Any] | None = None,
    data_version: str = "test-data",
) -> TrainedModel:
    """Fit and log the spec's model on ``raw`` (the spec's test fraction of the latest rows
    held out and scored); ``params`` override the estimator's (e.g. fewer iterations)."""
    import mlflow

    from components.train.core import fit_and_log, time_split
    from kubeloop.engineering import feature_frame
    from kubeloop.metrics import score

    if params:
        estimator = spec.model.estimator.model_copy(
            update={"params": {**spec.model.estimator.params, **params}}
        )
        spec = spec.model_copy(
            update={"model": spec.model.model_copy(update={"estimator": estimator})}
        )
    frame = feature_frame(raw, spec)
    features = [c for c in frame.columns if c not in (spec.entity_key, spec.timestamp, spec.target)]
    train, test = time_split(frame, spec)
    run_id, model_uri, model = fit_and_log(
        train,
        features,
        spec,
        settings,
        {"md5": data_version, "pointer": "", "materialized": "test/test"},
    )
    held_out = score(
        spec.task, model, test[features].to_numpy(dtype="float64"), test[spec.target].to_numpy()
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in held_out.items()})
    return TrainedModel(run_id, model_uri, features, model)


def register_model(
    settings: PlatformSettings,
    spec: ProjectSpec,
    trained: TrainedModel,
    *,
    champion: bool = False,
    data_version: str = "test-data",
) -> RegisteredModel:
    """Register ``trained`` as the next version of the spec's model (alias ``challenger``);
    with ``champion``, promote it (approval recorded as by ``tests``)."""
    from kubeloop import model_store, registry

    client = model_store.configure(settings)
    version = registry.register(
        client,
        spec.model_name,
        trained.model_uri,
        trained.run_id,
        spec.model.tag,
        spec.model.manual_revision,
        data_version,
    )
    if champion:
        registry.promote(
            client, spec.model_name, str(version.version), approve=True, approver="tests"
        )
    return RegisteredModel(str(version.version), version.tags[registry.TAG_NAME])
