"""Drift and quality of a window of predictions against the champion's reference (Evidently).

One Evidently ``Report`` holds everything the HTML shows: a ``ValueDrift`` per feature (the test
and threshold from the spec, or Evidently's choice per column), a ``ValueDrift`` of the
prediction, and, when labels exist, the regression metrics next to the reference's. Whether a
column drifted is read from Evidently's own test result, so distance tests (higher = drift) and
p-value tests (lower = drift) are handled by the library that defines them.

The exported quality figures come from ``kubeloop.metrics`` (scikit-learn), the functions the
evaluate step uses, so a live RMSE and a held-out RMSE are the same computation; they use every
labelled row of the window.

For a classifier the prediction is a class: its drift is Evidently's categorical test on the
class distribution (the prediction and the target are declared categorical), and the live
figures are accuracy and weighted F1 from the labels, ROC AUC and log loss from the logged
probabilities.

Evidently's cost grows with the rows it is given (sorting, unique counts, per-column plots), so
windows larger than ``sample_rows`` are compared through a uniform random sample of that many
rows (fixed seed). With a reference of a few thousand rows the drift verdict is limited by the
reference, not by a 100,000-row sample of the window: the sampling error of a drift score at
that size is far below any drift threshold.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kubeloop.metrics import classification_metrics, regression_metrics
from kubeloop.spec import LOWER_IS_BETTER, MonitoringSpec
from monitoring.window import ACTUAL, PREDICTION, PROBABILITIES

TARGET = "target"  # the ground truth column in both Evidently datasets


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's verdict on one column."""

    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass(frozen=True)
class DriftSummary:
    features: list[ColumnDrift]
    prediction: ColumnDrift | None

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.features if c.drifted]

    @property
    def share(self) -> float:
        """Share of the model's features that drifted (0 when there are none)."""
        return len(self.drifted) / len(self.features) if self.features else 0.0


@dataclass(frozen=True)
class Quality:
    """Live quality on the labelled rows next to the baseline's."""

    rows: int
    current: dict[str, float]
    baseline: dict[str, float]
    primary: str

    @property
    def loss(self) -> float | None:
        """Relative degradation of the primary metric (0.2 = 20% worse; negative = better)."""
        now, then = self.current.get(self.primary), self.baseline.get(self.primary)
        if now is None or then is None or then == 0 or not np.isfinite(now):
            return None
        change = (now - then) / abs(then)
        return change if self.primary in LOWER_IS_BETTER else -change


@dataclass
class Analysis:
    drift: DriftSummary
    quality: Quality
    snapshot: Any = field(repr=False)  # the Evidently snapshot (HTML, JSON); None: no rows
    compared_rows: int = 0  # window rows Evidently saw (a sample when the window is larger)

    def html(self) -> str:
        if self.snapshot is None:
            return "<p>No predictions in the window: nothing was compared.</p>"
        return self.snapshot.get_html_str(as_iframe=False)


def probability_matrix(
    probabilities: Any, y_true: np.ndarray
) -> tuple[np.ndarray, list[str]] | tuple[None, None]:
    """Logged class probabilities as a matrix with sorted class columns (absent classes 0);
    (None, None) when a row has none or a true class is not among them (a model that never
    learned it has no probability for it, so ROC AUC and log loss are undefined).

    ``probabilities``: a frame with a column per class (the window's, NaN where a row's JSON
    lacks the class), or rows of ``{class: probability}`` (the paired read's)."""
    if not isinstance(probabilities, pd.DataFrame):
        probabilities = pd.DataFrame([r or {} for r in probabilities])
    if probabilities.empty or probabilities.isna().all(axis=1).any():
        return None, None
    classes = sorted(map(str, probabilities.columns))
    if not set(pd.unique(np.asarray(y_true, dtype=object))) <= set(classes):
        return None, None
    matrix = probabilities.rename(columns=str)[classes].fillna(0.0).to_numpy(np.float64)
    return matrix, classes


def live_quality(
    task: str, y_true: np.ndarray, y_pred: np.ndarray, probabilities: Any = None
) -> dict[str, float]:
    """The evaluation step's metrics on live rows (empty with fewer than two rows); for a
    classifier with its logged ``probabilities`` (``probability_matrix``'s forms) also ROC AUC
    and log loss."""
    if len(y_true) < 2:
        return {}
    if task == "classification":
        (true, true_names), (pred, pred_names) = (
            pd.factorize(np.asarray(y, dtype=object), use_na_sentinel=False)
            for y in (y_true, y_pred)
        )
        true_names, pred_names = [str(v) for v in true_names], [str(v) for v in pred_names]
        matrix, classes = (None, None)
        if probabilities is not None:
            matrix, classes = probability_matrix(probabilities, np.asarray(true_names))
        # Classes as integer codes into one sorted list of names (an integer class 3 meets the
        # logged "3"): scikit-learn sorts the labels again and again (np.unique), which on
        # millions of string objects was nearly all of the cost (4-8 s for 500,000 rows).
        names = sorted({*true_names, *pred_names, *(classes or [])})
        index = {name: i for i, name in enumerate(names)}
        codes = [
            np.array([index[n] for n in found], dtype=np.int64)[at]
            for found, at in ((true_names, true), (pred_names, pred))
        ]
        labels = None if classes is None else [index[c] for c in classes]
        return classification_metrics(codes[0], codes[1], matrix, labels)
    return regression_metrics(y_true, y_pred)


def as_classes(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Classes as the log stores them, strings (the reference keeps the model's own type: an
    integer class 3 must meet the logged "3"); missing stays missing."""
    out = frame.copy()
    for column in columns:
        if column in out:
            out[column] = out[column].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
    return out


def _dataset(frame: pd.DataFrame, features: list[str], task: str, labelled: bool):
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Regression,
    )

    columns = [*features, PREDICTION] + ([TARGET] if labelled else [])
    definition: dict[str, Any] = {"numerical_columns": columns}
    if task == "classification":
        # The prediction is a class: drift of its distribution is a categorical test.
        definition["numerical_columns"] = features
        definition["categorical_columns"] = [PREDICTION] + ([TARGET] if labelled else [])
    if labelled and task == "regression":
        definition["regression"] = [Regression(target=TARGET, prediction=PREDICTION)]
    elif labelled:
        binary = frame[TARGET].dropna().nunique() <= 2
        cls = BinaryClassification if binary else MulticlassClassification
        kwargs: dict[str, Any] = {"target": TARGET, "prediction_labels": PREDICTION}
        if binary:  # string classes: Evidently's default positive label is 1
            kwargs["pos_label"] = sorted(frame[TARGET].dropna().unique())[-1]
        definition["classification"] = [cls(**kwargs)]
    return Dataset.from_pandas(frame[columns], data_definition=DataDefinition(**definition))


def _metrics(features: list[str], spec: MonitoringSpec, task: str, labelled: bool) -> list:
    from evidently import metrics as em

    items: list[Any] = [
        em.ValueDrift(column=c, method=spec.drift_method, threshold=spec.drift_threshold)
        for c in features
    ]
    items.append(em.ValueDrift(column=PREDICTION))
    if labelled and task == "regression":
        items += [em.RMSE(), em.MAE(), em.R2Score(), em.MeanError()]
    elif labelled:
        items += [em.Accuracy(), em.F1Score()]
    return items


def _column_drifts(snapshot) -> dict[str, ColumnDrift]:
    """ValueDrift results by column, drifted = Evidently's drift test failed."""
    data = snapshot.dict()
    failed = {
        t["metric_config"]["metric_id"]
        for t in data.get("tests", [])
        if t.get("id") == "drift" and t.get("status") == "FAIL"
    }
    out = {}
    for metric in data["metrics"]:
        config = metric["config"]
        if not config.get("type", "").endswith(":ValueDrift"):
            continue
        out[config["column"]] = ColumnDrift(
            column=config["column"],
            method=str(config.get("method")),
            threshold=float(config.get("threshold") or 0.0),
            score=float(metric["value"]),
            drifted=metric["id"] in failed,
        )
    return out


def analyze(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str],
    target: str,
    *,
    task: str,
    spec: MonitoringSpec,
    primary_metric: str,
    baseline_metrics: dict[str, float],
    sample_rows: int | None = 100_000,
    labelled: pd.DataFrame | None = None,
    probabilities: pd.DataFrame | None = None,
) -> Analysis:
    """Compare a window with the reference: per-feature and prediction drift, live quality.

    Args:
        reference: The champion's reference sample (features, ``target``, ``prediction``).
        current: The window (features, ``prediction``, ``actual`` with NaN where unlabelled).
        features: The model's features (drift is computed for each).
        target: Name of the target column in ``reference``.
        task: ``regression`` or ``classification``.
        spec: Drift test and threshold (``monitoring`` section of the spec).
        primary_metric: The metric whose loss triggers retraining.
        baseline_metrics: The champion's held-out metrics.
        sample_rows: Larger windows reach Evidently as a uniform sample of this many rows
            (None: every row); quality figures always use every labelled row.
        labelled: ``prediction`` and ``actual`` of every labelled row of the window, when
            ``current`` is already a sample of it (None: the labelled rows of ``current``).
        probabilities: A classifier's class probabilities of those labelled rows, a column per
            class (the window's); None: the ``probabilities`` column of the labelled rows.

    Returns:
        The drift summary, the quality figures and the Evidently snapshot.
    """
    labelled_rows = current[current[ACTUAL].notna()] if labelled is None else labelled
    quality = Quality(
        rows=len(labelled_rows),
        current=live_quality(
            task,
            labelled_rows[ACTUAL].to_numpy(),
            labelled_rows[PREDICTION].to_numpy(),
            labelled_rows.get(PROBABILITIES) if probabilities is None else probabilities,
        ),
        baseline=dict(baseline_metrics),
        primary=primary_metric,
    )
    if current.empty:  # a quiet window (a new champion, a night): nothing to compare
        return Analysis(
            drift=DriftSummary(features=[], prediction=None), quality=quality, snapshot=None
        )
    from evidently import Report

    compared = current
    if sample_rows is not None and len(current) > sample_rows:
        compared = current.sample(sample_rows, random_state=0)
    labelled = compared[ACTUAL].notna().sum() >= 2
    ref = reference.rename(columns={target: TARGET})
    cur = compared.rename(columns={ACTUAL: TARGET})
    if task == "classification":
        ref, cur = as_classes(ref, [PREDICTION, TARGET]), as_classes(cur, [PREDICTION, TARGET])
    report = Report(_metrics(features, spec, task, labelled), include_tests=True)
    with warnings.catch_warnings():
        # Evidently computes figures on slices that can be tiny; they are not our figures.
        warnings.simplefilter("ignore")
        snapshot = report.run(
            _dataset(cur, features, task, labelled), _dataset(ref, features, task, labelled)
        )
    drifts = _column_drifts(snapshot)
    return Analysis(
        drift=DriftSummary(
            features=[drifts[c] for c in features], prediction=drifts.get(PREDICTION)
        ),
        quality=quality,
        snapshot=snapshot,
        compared_rows=len(compared),
    )
