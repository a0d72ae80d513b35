"""The baseline a monitoring run compares with: the champion's reference sample and metrics.

The train step logs a reference sample (entity, timestamp, features, target and the model's
``prediction``) to the model's MLflow run, and the evaluate step logs the held-out metrics
(``test_<metric>``). Those held-out figures are the quality baseline; without them (a model
registered by hand) the reference sample's own in-sample figures stand in, and say so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from kubeloop import model_store, registry
from kubeloop.errors import ModelNotFoundError
from kubeloop.metrics import classification_metrics, regression_metrics
from kubeloop.spec import ProjectSpec
from monitoring.errors import ReferenceMissingError


@dataclass(frozen=True)
class Baseline:
    """A registry version with what monitoring needs from its training run."""

    model_name: str
    version: str  # registry version number
    label: str  # V<tag>.<manual>.<auto>
    run_id: str
    features: list[str]
    target: str
    reference: pd.DataFrame  # features, target and prediction of training rows
    metrics: dict[str, float]  # held-out metrics (or the reference's own, see metrics_source)
    metrics_source: str  # "held-out" or "reference"
    trained_at: datetime


def baseline_metrics(run, reference: pd.DataFrame, target: str, task: str) -> tuple[dict, str]:
    """Held-out ``test_*`` metrics of the run, else the reference sample's own figures."""
    held_out = {
        k.removeprefix("test_"): float(v)
        for k, v in run.data.metrics.items()
        if k.startswith("test_")
    }
    if held_out:
        return held_out, "held-out"
    if {target, "prediction"} <= set(reference.columns):
        y, predicted = reference[target], reference["prediction"]
        if task == "regression":
            return regression_metrics(y, predicted), "reference"
        return classification_metrics(y.astype(str), predicted.astype(str)), "reference"
    return {}, "none"


def load_baseline(
    client, spec: ProjectSpec, name: str | None = None, alias: str = registry.CHAMPION
) -> Baseline:
    """The baseline of the version behind ``alias`` (the champion) of the registered model
    ``name`` (default: the spec's; production monitors ``rollout.production_model``, whose
    versions are copies that keep their training run).

    Raises:
        ModelNotFoundError: No version carries the alias.
        ReferenceMissingError: Its run logged no reference sample.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    name = name or spec.model_name
    version = registry.by_alias(client, name, alias)
    if version is None:
        raise ModelNotFoundError(
            f"{name} has no '{alias}' yet: nothing to monitor. Train one "
            "(`kubeloop run training`) and promote it (`kubeloop promote <version> --approve`)."
        )
    run = client.get_run(version.run_id)
    with tempfile.TemporaryDirectory(prefix="kubeloop-reference-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=version.run_id, artifact_path=model_store.REFERENCE_ARTIFACT, dst_path=tmp
            )
        except (MlflowException, OSError) as exc:
            raise ReferenceMissingError(
                f"{name} version {version.version}: run {version.run_id} has no "
                f"{model_store.REFERENCE_ARTIFACT}; retrain it with kubeloop's train step"
            ) from exc
        reference = pd.read_parquet(Path(path))
    metadata = get_model_info(f"models:/{name}/{version.version}").metadata or {}
    features = list(metadata.get("features") or [])
    if not features:  # a model without kubeloop metadata: the reference's feature columns
        skip = {spec.entity_key, spec.timestamp, spec.target, "prediction"}
        features = [c for c in reference.columns if c not in skip]
    missing = [c for c in [*features, "prediction"] if c not in reference.columns]
    if missing:
        raise ReferenceMissingError(
            f"{name} version {version.version}: the reference sample lacks {missing}"
        )
    metrics, source = baseline_metrics(run, reference, spec.target, spec.task)
    return Baseline(
        model_name=name,
        version=str(version.version),
        label=version.tags.get(registry.TAG_NAME, f"v{version.version}"),
        run_id=version.run_id,
        features=features,
        target=spec.target,
        reference=reference,
        metrics=metrics,
        metrics_source=source,
        trained_at=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
    )


def describe(baseline: Baseline, timestamp: str) -> dict[str, Any]:
    """What a run compared with, for its report and summary JSON: on-call people reading a
    drift report need to know which rows "normal" was, not only which model. Never raises:
    a reference whose times cannot be read gives no time span."""
    column = baseline.reference.get(timestamp)
    readable = column is not None and pd.api.types.is_datetime64_any_dtype(column)
    times = pd.to_datetime(column, utc=True).dropna() if readable else pd.Series([])
    return {
        "run_id": baseline.run_id,
        "rows": len(baseline.reference),
        "from": None if times.empty else times.min().isoformat(),
        "to": None if times.empty else times.max().isoformat(),
        "trained_at": baseline.trained_at.isoformat(),
        "quality_baseline": baseline.metrics_source,
    }


def reference_text(reference: dict[str, Any]) -> str:
    """``describe``'s figures as one line of the report's summary."""
    span = ""
    if reference.get("from") and reference.get("to"):
        start, end = (pd.Timestamp(reference[k]) for k in ("from", "to"))
        span = f", {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    trained = pd.Timestamp(reference["trained_at"])
    source = {
        "held-out": "held-out metrics",
        "reference": "the reference's own figures (no held-out metrics logged)",
    }.get(reference["quality_baseline"], "none")
    rows = reference["rows"]
    return (
        f"a sample of {rows:,} row{'' if rows == 1 else 's'} (training run "
        f"{reference['run_id']}{span}); trained {trained:%Y-%m-%d %H:%M} UTC; "
        f"quality baseline: {source}"
    )
