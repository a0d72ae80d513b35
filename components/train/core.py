"""Train step: Feast training set -> fitted scikit-learn Pipeline -> MLflow run.

The preprocessing (imputation, scaling) lives inside the Pipeline, so the artifact that serving
loads applies it exactly as training did.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from components.features.core import service_views
from kubeloop import model_store, production_labels
from kubeloop.feature_store import asof_join, joins_as_of, offline_rows, open_store
from kubeloop.metrics import score
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec

log = logging.getLogger(__name__)
REFERENCE_ROWS = 5_000


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    model_uri: str
    features: list[str]
    train_rows: int
    test_rows: int


def feature_names(store, spec: ProjectSpec) -> list[str]:
    """Model input order: the feature service's features, view by view."""
    return [name for _, names in service_views(store, spec) for name in names]


def training_set(store, spec: ProjectSpec, entity_df: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time join of the labels with the feature service (Feast offline store).

    On the embedded DuckDB store over Parquet files and on the PostgreSQL store the join is
    ``asof_join`` (Feast's semantics, linear cost: on PostgreSQL the rows of the labels' window
    are pulled once, then joined here); other offline stores run Feast's
    ``get_historical_features``.
    """
    views = service_views(store, spec)
    if joins_as_of(store, views):
        times = entity_df[spec.timestamp]
        end = times.max().to_pydatetime() if len(times) else datetime.now(UTC)
        start = times.min().to_pydatetime() if len(times) else end
        sources = [
            (view, names, offline_rows(store, view, names, start, end)) for view, names in views
        ]
        frame = asof_join(entity_df, sources, spec.timestamp)
    else:
        service = store.get_feature_service(spec.features.service)
        frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    return frame.sort_values([spec.timestamp, spec.entity_key], ignore_index=True)


def time_split(df: pd.DataFrame, spec: ProjectSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out the most recent rows: the model is judged on data later than it saw."""
    ordered = df.sort_values([spec.timestamp, spec.entity_key], ignore_index=True)
    cut = int(len(ordered) * (1 - spec.evaluation.test_fraction))
    return ordered.iloc[:cut], ordered.iloc[cut:]


def build_pipeline(spec: ProjectSpec) -> Pipeline:
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("model", spec.model.estimator.build()),
        ]
    )


def model_requirements() -> list[str]:
    """What loading the model needs, pinned to the versions that trained it."""
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}"
        for pkg in ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas")
    ]


def git_commit() -> str:
    """The code version: the repository's commit, or 'unknown' outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def reference_sample(
    train: pd.DataFrame,
    spec: ProjectSpec,
    held_out: pd.DataFrame | None = None,
    since: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The rows monitoring compares production with: a uniform sample of the training rows, or,
    when the run trained on production's labelled rows (from ``since``, the start of their
    window), of the training and held-out rows of that window, at least
    ``monitoring.min_rows`` of them. A sample of all the history still looked like the data
    before a drift after a retraining on the drifted rows, so the retrained champion was
    flagged for the drift it had just learned."""
    frame = train
    if since is not None:
        both = train if held_out is None else pd.concat([train, held_out])
        recent = both.loc[pd.to_datetime(both[spec.timestamp], utc=True) >= since]
        if len(recent) >= spec.monitoring.min_rows:
            frame = recent
    return frame.sample(min(REFERENCE_ROWS, len(frame)), random_state=0)


def fit_and_log(
    train: pd.DataFrame,
    features: list[str],
    spec: ProjectSpec,
    settings: PlatformSettings,
    data: dict[str, Any],
    reference: pd.DataFrame | None = None,
) -> tuple[str, str, Pipeline]:
    """Fit the Pipeline and log params, data version, code version, model and reference sample
    (``reference``, by default ``reference_sample(train, spec)``)."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    model_store.configure(settings)
    experiment = model_store.experiment_id(settings, spec.name)
    pipeline = build_pipeline(spec)
    X = train[features].to_numpy(dtype="float64")
    y = train[spec.target].to_numpy()
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.set_tags(
            {
                "kubeloop.spec": spec.name,
                "kubeloop.data_version": data["md5"],
                "kubeloop.feature_service": spec.features.service,
                "kubeloop.feast_materialized": data.get("materialized", ""),
                "mlflow.source.git.commit": git_commit(),
            }
        )
        mlflow.log_params(
            {
                "estimator": spec.model.estimator.import_path,
                **{f"estimator.{k}": v for k, v in spec.model.estimator.params.items()},
                "features": ",".join(features),
                "train_rows": len(train),
                "data_version": data["md5"],
                # What of the dataset came from production's labelled predictions (lineage).
                "production_rows": data.get("production_rows", 0),
                "labelled_hours": spec.retraining.labelled_hours or 0,
            }
        )
        pipeline.fit(X, y)
        mlflow.log_metrics({f"train_{k}": v for k, v in score(spec.task, pipeline, X, y).items()})
        example = train[features].head(5)
        with warnings.catch_warnings():
            # MLflow checks the input example by predicting on it as a DataFrame; the pipeline
            # is fitted on arrays in feature order (what the server passes), so scikit-learn
            # would warn "X has feature names" about a check, not about a real prediction.
            warnings.filterwarnings("ignore", message="X has feature names", category=UserWarning)
            info = mlflow.sklearn.log_model(
                pipeline,
                name=model_store.MODEL_ARTIFACT,
                signature=infer_signature(example, pipeline.predict(example.to_numpy())),
                input_example=example,
                serialization_format="skops",
                skops_trusted_types=model_store.trusted_types(pipeline),
                metadata={"features": features, "target": spec.target, "task": spec.task},
                # Pinned from this environment: MLflow's inference would re-import the model in a
                # subprocess on every run (~10 s) to guess the same list.
                pip_requirements=model_requirements(),
            )
        if reference is None:
            reference = reference_sample(train, spec)
        reference = reference[[spec.entity_key, spec.timestamp, *features, spec.target]].copy()
        reference["prediction"] = pipeline.predict(reference[features].to_numpy())
        with tempfile.TemporaryDirectory() as tmp:
            ref_path = Path(tmp) / "reference.parquet"
            reference.to_parquet(ref_path, index=False)
            mlflow.log_artifact(str(ref_path), artifact_path="reference")
            if data.get("pointer"):
                mlflow.log_text(data["pointer"], "data/dataset.parquet.dvc")
    return run.info.run_id, info.model_uri, pipeline


def train(
    entity_df: pd.DataFrame, spec: ProjectSpec, settings: PlatformSettings, data: dict[str, Any]
) -> tuple[TrainResult, pd.DataFrame]:
    """Build the training set, fit, log; returns the result and the held-out rows."""
    store = open_store(settings, spec)
    features = feature_names(store, spec)
    from_log = production_labels.is_logged(entity_df)
    frame = production_labels.combine(
        training_set(store, spec, production_labels.source_labels(entity_df, spec)),
        production_labels.served_rows(entity_df.loc[from_log], spec, features),
        spec,
    )
    if from_log.any():
        log.info("%d labelled production rows join the training set", int(from_log.sum()))
    dropped = frame[features].isna().all(axis=1)
    if dropped.any():
        log.warning("%d rows found no features in time and are left out", int(dropped.sum()))
        frame = frame.loc[~dropped]
    train_df, test_df = time_split(frame, spec)
    data = {**data, "production_rows": int(from_log.sum())}
    since = None
    if from_log.any():
        since = pd.to_datetime(entity_df.loc[from_log, spec.timestamp], utc=True).min()
    reference = reference_sample(train_df, spec, test_df, since)
    run_id, model_uri, _ = fit_and_log(train_df, features, spec, settings, data, reference)
    log.info(
        "trained on %d rows, holding out %d; MLflow run %s", len(train_df), len(test_df), run_id
    )
    result = TrainResult(
        run_id=run_id,
        model_uri=model_uri,
        features=features,
        train_rows=len(train_df),
        test_rows=len(test_df),
    )
    return result, test_df


def run_step(
    spec: ProjectSpec, settings: PlatformSettings, labels_path: str, data: dict, test_path: str
) -> TrainResult:
    """The train step as a pipeline sees it: labels in, MLflow run and held-out rows out."""
    result, test = train(pd.read_parquet(labels_path), spec, settings, data)
    Path(test_path).parent.mkdir(parents=True, exist_ok=True)
    test.to_parquet(test_path, index=False)
    return result
