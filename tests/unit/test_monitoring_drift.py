"""Drift and quality of a window against the reference (Evidently and scikit-learn)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from feature_repo.engineering import FEATURES
from kubeloop.engineering import feature_frame
from kubeloop.sample_data import GeneratorConfig, generate
from kubeloop.spec import MonitoringSpec
from monitoring.drift import Quality, analyze
from tests.utils.factories import example_spec

SPEC = example_spec()
TARGET = SPEC.target


def readings(rows: int, **drift) -> pd.DataFrame:
    """Engineered features of generated readings (seed fixed: the same buildings every time),
    with a 'prediction' that a decent model would make and the actual value."""
    frame = feature_frame(
        generate(GeneratorConfig(rows=rows, seed=11, buildings=200, **drift)), SPEC
    )
    rng = np.random.default_rng(5)
    frame["prediction"] = frame[TARGET] * rng.normal(1.0, 0.05, len(frame))
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return readings(4_000).sample(2_000, random_state=0)


def window(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={TARGET: "actual"})


def run(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: MonitoringSpec | None = None,
    baseline: dict | None = None,
):
    return analyze(
        reference,
        current,
        FEATURES,
        TARGET,
        task="regression",
        spec=spec or SPEC.monitoring,
        primary_metric="rmse",
        baseline_metrics=baseline or {},
    )


def test_same_distribution_traffic_is_not_flagged(reference: pd.DataFrame) -> None:
    same = window(readings(4_000).drop(reference.index))
    result = run(reference, same)
    assert result.drift.drifted == []
    assert result.drift.share == 0.0
    assert result.drift.prediction is not None and not result.drift.prediction.drifted
    assert len(result.drift.features) == len(FEATURES)


def test_shifted_traffic_is_flagged_on_the_shifted_features(reference: pd.DataFrame) -> None:
    shifted = window(readings(2_000, drift="covariate", strength=1.0))
    result = run(reference, shifted)
    # A heatwave with more people: weather and occupancy move, building attributes do not.
    assert {"outdoor_temp_c", "cooling_degrees", "humidity_pct", "occupancy_density"} <= set(
        result.drift.drifted
    )
    assert "log_floor_area" not in result.drift.drifted
    assert result.drift.share >= SPEC.monitoring.drift_share
    assert result.drift.prediction is not None and result.drift.prediction.drifted


def test_the_spec_chooses_the_drift_test_and_threshold(reference: pd.DataFrame) -> None:
    shifted = window(readings(1_000, drift="covariate", strength=0.5))
    spec = MonitoringSpec(drift_method="psi", drift_threshold=0.2)
    result = run(reference, shifted, spec)
    assert {c.method for c in result.drift.features} == {"psi"}
    assert {c.threshold for c in result.drift.features} == {0.2}
    for column in result.drift.features:
        assert column.drifted == (column.score >= 0.2)


def test_quality_figures_equal_scikit_learn_on_the_labelled_rows(reference) -> None:
    current = window(readings(1_500, drift="concept", strength=0.5))
    current.loc[current.index[::3], "actual"] = np.nan  # feedback not (yet) sent for a third
    result = run(reference, current, baseline={"rmse": 10.0, "mae": 8.0, "r2": 0.9, "mse": 100})
    labelled = current.dropna(subset=["actual"])
    y, p = labelled["actual"], labelled["prediction"]
    assert result.quality.rows == len(labelled) == 1_000
    assert result.quality.current["mse"] == pytest.approx(mean_squared_error(y, p), rel=1e-12)
    assert result.quality.current["rmse"] == pytest.approx(
        np.sqrt(mean_squared_error(y, p)), rel=1e-12
    )
    assert result.quality.current["mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-12)
    assert result.quality.current["r2"] == pytest.approx(r2_score(y, p), rel=1e-12)
    # Evidently's own figures in the report agree.
    shown = {m["metric_name"].split("(")[0]: m["value"] for m in result.snapshot.dict()["metrics"]}
    assert shown["RMSE"] == pytest.approx(result.quality.current["rmse"], rel=1e-9)
    assert shown["MAE"]["mean"] == pytest.approx(result.quality.current["mae"], rel=1e-9)


def test_a_window_without_labels_reports_drift_and_no_quality(reference) -> None:
    current = window(readings(500)).assign(actual=np.nan)
    result = run(reference, current, baseline={"rmse": 10.0})
    assert result.quality.rows == 0 and result.quality.current == {}
    assert result.quality.loss is None
    assert "<html" in result.html().lower()


def test_quality_loss_is_relative_and_signed_by_metric_direction() -> None:
    assert Quality(10, {"rmse": 12.0}, {"rmse": 10.0}, "rmse").loss == pytest.approx(0.2)
    assert Quality(10, {"rmse": 8.0}, {"rmse": 10.0}, "rmse").loss == pytest.approx(-0.2)
    assert Quality(10, {"r2": 0.72}, {"r2": 0.9}, "r2").loss == pytest.approx(0.2)
    assert Quality(10, {}, {"rmse": 10.0}, "rmse").loss is None


def test_a_large_window_reaches_evidently_as_a_sample_but_quality_uses_every_row(reference) -> None:
    current = window(readings(3_000, drift="covariate", strength=1.0))
    full = run(reference, current)
    sampled = analyze(
        reference,
        current,
        FEATURES,
        TARGET,
        task="regression",
        spec=SPEC.monitoring,
        primary_metric="rmse",
        baseline_metrics={},
        sample_rows=1_000,
    )
    assert sampled.compared_rows == 1_000 and full.compared_rows == 3_000
    assert sampled.drift.drifted == full.drift.drifted
    assert sampled.quality.rows == 3_000
    assert sampled.quality.current == full.quality.current
