"""Helpers for tests, benchmarks and the demo: a champion with its reference, a filled log.

Not used by the monitoring job itself. ``train_champion`` fits the spec's Pipeline with the
platform's own train code on generated rows and registers it as ``champion`` (the MLflow run
then holds the reference sample and held-out metrics, as after a pipeline run);
``production_rows`` turns generated readings into what the server would log; ``log_rows`` and
``log_feedback`` write them into the prediction log tables directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from kubeloop.engineering import feature_frame
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec


@dataclass(frozen=True)
class Champion:
    version: str  # registry number
    label: str  # V-name
    run_id: str
    features: list[str]
    model: object  # the fitted Pipeline


def train_champion(
    raw: pd.DataFrame,
    spec: ProjectSpec,
    settings: PlatformSettings,
    *,
    promote: bool = True,
    data_version: str = "test-data",
) -> Champion:
    """Fit and log the spec's model on ``raw`` (last 20% held out), register and promote it."""
    import mlflow

    from components.train.core import fit_and_log, time_split
    from kubeloop import model_store, registry
    from kubeloop.metrics import score

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
    client = model_store.configure(settings)
    held_out = score(
        spec.task, model, test[features].to_numpy(dtype="float64"), test[spec.target].to_numpy()
    )
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in held_out.items()})
    version = registry.register(
        client,
        spec.model_name,
        model_uri,
        run_id,
        spec.model.tag,
        spec.model.manual_revision,
        data_version,
    )
    if promote:
        registry.promote(
            client, spec.model_name, str(version.version), approve=True, approver="tests"
        )
    return Champion(str(version.version), version.tags[registry.TAG_NAME], run_id, features, model)


def production_rows(
    raw: pd.DataFrame, spec: ProjectSpec, model, features: Sequence[str]
) -> pd.DataFrame:
    """Readings as the server logs them: features, the model's prediction, the actual value."""
    frame = feature_frame(raw, spec)
    out = frame[list(features)].copy()
    out["prediction"] = model.predict(out.to_numpy(dtype="float64"))
    out["actual"] = frame[spec.target].to_numpy()
    out["entity_id"] = frame[spec.entity_key].astype(str).to_numpy()
    return out


def log_rows(
    engine,
    frame: pd.DataFrame,
    features: Sequence[str],
    *,
    model_name: str,
    version: str,
    label: str,
    start: datetime,
    spacing: timedelta = timedelta(seconds=1),
    role: str = "champion",
    prefix: str = "req",
    request_ids: Sequence[str] | None = None,
) -> list[str]:
    """Insert one ``predictions`` row per frame row (features, ``prediction``); returns ids."""
    from kubeloop.log_store import create_all, predictions

    create_all(engine)
    ids = (
        list(request_ids)
        if request_ids is not None
        else [f"{prefix}-{i}" for i in range(len(frame))]
    )
    X = frame[list(features)].to_numpy(dtype="float64")
    entities = frame["entity_id"].tolist() if "entity_id" in frame else [None] * len(frame)
    rows = [
        {
            "request_id": rid,
            "ts": start + i * spacing,
            "entity_id": entity,
            "features": {
                f: (None if np.isnan(v) else float(v)) for f, v in zip(features, x, strict=True)
            },
            "prediction": float(pred),
            "model_name": model_name,
            "model_version": str(version),
            "model_label": label,
            "role": role,
        }
        for i, (rid, entity, x, pred) in enumerate(
            zip(ids, entities, X, frame["prediction"], strict=True)
        )
    ]
    with engine.begin() as conn:
        for chunk in range(0, len(rows), 5_000):
            conn.execute(predictions.insert(), rows[chunk : chunk + 5_000])
    return ids


def log_feedback(
    engine, request_ids: Sequence[str], actuals: Sequence[float], ts: datetime
) -> None:
    """Insert ground truth for request ids."""
    from kubeloop.log_store import create_all, feedback

    create_all(engine)
    rows = [
        {"request_id": rid, "ts": ts, "actual": float(a)}
        for rid, a in zip(request_ids, actuals, strict=True)
    ]
    with engine.begin() as conn:
        for chunk in range(0, len(rows), 5_000):
            conn.execute(feedback.insert(), rows[chunk : chunk + 5_000])
