"""Helpers for the monitoring tests: a prediction log filled without a server.

``production_rows`` turns generated readings into what the server would log for a model (from
tests/utils/models.py); ``log_rows`` and ``log_feedback`` write them into the prediction log
tables directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from kubeloop.engineering import feature_frame
from kubeloop.spec import ProjectSpec


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


def log_classes(
    engine,
    base: str,
    proba: np.ndarray,
    classes: Sequence[str],
    ts: datetime,
    *,
    role: str = "champion",
    version: str = "1",
    model_name: str = "wine",
) -> list[str]:
    """A classifier's rows stored the way the server stores them (its spool table, then the
    shipper): features ``a`` and ``b``, the class of the highest probability, every class's
    probability. Returns the request ids."""
    from serving.prediction_log import LogBatch
    from serving.shipper import store_segments
    from serving.spool import to_table

    batch = LogBatch(
        base_id=base,
        ts=ts.timestamp(),
        positions=None,
        entity_ids=None,
        feature_names=("a", "b"),
        features=np.random.default_rng(1).normal(size=(len(proba), 2)),
        predictions=proba,
        classes=np.asarray(classes),
        model_name=model_name,
        model_version=version,
        model_label=f"V1.0.{int(version) - 1}",
        role=role,
    )
    store_segments(engine, [(f"run/{base}-{role}", to_table([batch]))])
    return [f"{base}-{i}" for i in range(len(proba))]
