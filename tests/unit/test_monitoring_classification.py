"""Monitoring a classifier: the log's classes and probabilities read back (as the server's
spool and shipper store them), live accuracy, F1, ROC AUC and log loss equal to scikit-learn's,
the prediction's drift as a categorical test, and the shadow comparison on classes."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from kubeloop.log_store import ensure_schema
from kubeloop.spec import MonitoringSpec
from monitoring.drift import analyze, live_quality
from monitoring.rollout import compare_shadow
from monitoring.window import open_log, read_paired, read_window
from serving.prediction_log import write_feedback
from tests.utils.monitoring import log_classes

FEATURES = ("a", "b")
CLASSES = np.array(["class_0", "class_1", "class_2"])
START = datetime.now(UTC) - timedelta(minutes=30)
LOGGED = START + timedelta(minutes=1)


def probabilities(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Rows of class probabilities; ``shift`` moves mass towards class_2."""
    rng = np.random.default_rng(seed)
    raw = rng.dirichlet([1.0, 1.0, 1.0 + shift], size=n)
    return raw


@pytest.fixture
def engine(tmp_path: Path):
    engine = open_log(f"sqlite:///{tmp_path / 'predictions.db'}")
    ensure_schema(engine)
    return engine


def truth(proba: np.ndarray, seed: int = 3) -> np.ndarray:
    """True classes that mostly agree with the most probable one."""
    rng = np.random.default_rng(seed)
    best = proba.argmax(axis=1)
    flip = rng.random(len(best)) < 0.25
    return CLASSES[np.where(flip, rng.integers(0, 3, len(best)), best)]


@pytest.mark.parametrize("sample_rows", [None, 50])
def test_window_reads_classes_probabilities_and_true_classes(engine, sample_rows) -> None:
    proba = probabilities(200, seed=0)
    ids = log_classes(engine, "r", proba, CLASSES, LOGGED)
    actual = truth(proba)
    write_feedback(engine, list(zip(ids[:120], actual[:120].tolist(), strict=True)))
    window = read_window(
        engine,
        "wine",
        list(FEATURES),
        START,
        datetime.now(UTC) + timedelta(minutes=1),
        sample_rows=sample_rows,
        task="classification",
    )
    assert window.rows == 200 and len(window.labelled) == 120
    labelled = window.labelled
    assert set(labelled["prediction"]) <= set(CLASSES)
    q = live_quality(
        "classification",
        labelled["actual"].to_numpy(),
        labelled["prediction"].to_numpy(),
        window.probabilities,
    )
    y, predicted = actual[:120], CLASSES[proba[:120].argmax(axis=1)]
    assert q["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert q["f1"] == pytest.approx(skm.f1_score(y, predicted, average="weighted"))
    assert q["log_loss"] == pytest.approx(skm.log_loss(y, proba[:120], labels=list(CLASSES)))
    assert q["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, proba[:120], multi_class="ovr", average="weighted")
    )


def test_a_classifier_window_read_in_chunks_keeps_every_class_and_its_probabilities(
    engine,
) -> None:
    """Chunks of 16 rows, and a later model version that knows a fourth class: the classes and
    the probability columns of every chunk are joined, the first version's rows lacking the
    new class (NaN, taken as 0 for log loss)."""
    first = probabilities(90, seed=5)
    ids = log_classes(engine, "c", first, CLASSES, LOGGED)
    four = [*CLASSES, "class_3"]
    second = np.random.default_rng(6).dirichlet([1.0] * 4, size=30)
    ids_four = log_classes(engine, "d", second, four, LOGGED + timedelta(minutes=1), version="2")
    actual = [*truth(first)[:60], *np.asarray(four)[second[:20].argmax(axis=1)]]
    write_feedback(engine, list(zip(ids[:60] + ids_four[:20], actual, strict=True)))
    end = datetime.now(UTC) + timedelta(minutes=1)

    def read(chunk_rows: int, sample_rows: int | None = None):
        return read_window(
            engine,
            "wine",
            list(FEATURES),
            START,
            end,
            chunk_rows=chunk_rows,
            sample_rows=sample_rows,
            task="classification",
        )

    window = read(16)
    assert window.rows == 120 and len(window.labelled) == 80
    assert window.labelled["actual"].tolist() == actual
    assert window.frame["prediction"].isna().sum() == 0
    assert window.frame["actual"].notna().sum() == 80
    assert list(window.probabilities.columns) == four
    expected = np.vstack([np.c_[first[:60], np.zeros(60)], second[:20]])
    assert window.probabilities["class_3"].isna().sum() == 60
    np.testing.assert_allclose(window.probabilities.fillna(0).to_numpy(), expected, rtol=1e-6)
    whole = read(1_000)
    pd.testing.assert_frame_equal(window.labelled, whole.labelled)
    pd.testing.assert_frame_equal(window.probabilities, whole.probabilities)
    q = live_quality(
        "classification", np.asarray(actual), whole.labelled["prediction"], whole.probabilities
    )
    assert q["log_loss"] == pytest.approx(skm.log_loss(actual, expected, labels=four), rel=1e-5)
    sampled = read(16, sample_rows=30)
    assert len(sampled.frame) == 30 and len(sampled.labelled) == 80


def test_an_empty_classifier_window_has_no_rows_and_no_quality(engine) -> None:
    window = read_window(
        engine, "wine", list(FEATURES), START, START + timedelta(minutes=1), task="classification"
    )
    assert window.rows == 0 and len(window.labelled) == 0 and window.probabilities.empty
    assert live_quality("classification", [], [], window.probabilities) == {}


def test_prediction_drift_is_a_categorical_test_on_the_class_distribution(engine) -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(rng.normal(size=(600, 2)), columns=list(FEATURES))
    reference["prediction"] = rng.choice(CLASSES, 600, p=[0.4, 0.4, 0.2])
    reference["cultivar"] = reference["prediction"]

    def current(p) -> pd.DataFrame:
        frame = pd.DataFrame(rng.normal(size=(600, 2)), columns=list(FEATURES))
        frame["prediction"] = rng.choice(CLASSES, 600, p=p)
        frame["actual"] = frame["prediction"]
        return frame

    def run(frame: pd.DataFrame):
        return analyze(
            reference,
            frame,
            list(FEATURES),
            "cultivar",
            task="classification",
            spec=MonitoringSpec(),
            primary_metric="f1",
            baseline_metrics={"f1": 1.0},
        )

    same, shifted = run(current([0.4, 0.4, 0.2])), run(current([0.1, 0.1, 0.8]))
    assert not same.drift.prediction.drifted and shifted.drift.prediction.drifted
    assert shifted.drift.prediction.method.startswith("chi-square")  # categorical, not K-S
    assert shifted.quality.current["f1"] == pytest.approx(1.0)


def test_integer_classes_in_the_reference_meet_the_logged_strings() -> None:
    q = live_quality("classification", np.array(["1", "2", "1"]), np.array([1, 2, 2]))
    assert q["accuracy"] == pytest.approx(2 / 3)


def test_shadow_comparison_counts_disagreements_and_judges_the_primary_metric(engine) -> None:
    proba = probabilities(60, seed=4)
    ids = log_classes(engine, "s", proba, CLASSES, LOGGED)
    worse = np.roll(proba, 1, axis=1)  # the candidate ranks the classes wrongly
    log_classes(engine, "s", worse, CLASSES, LOGGED, role="shadow", version="2")
    write_feedback(engine, list(zip(ids, CLASSES[proba.argmax(axis=1)].tolist(), strict=True)))
    time.sleep(0.01)
    pairs = read_paired(
        engine,
        "wine",
        START,
        datetime.now(UTC) + timedelta(minutes=1),
        ["champion", "shadow"],
        "classification",
    )
    comparison, _ = compare_shadow(pairs, "2", "1", "classification", "f1")
    assert comparison.pairs == 60 and comparison.mean_abs_diff == 1.0
    assert comparison.champion["accuracy"] == 1.0 and comparison.candidate["accuracy"] == 0.0
    assert comparison.quality_loss == pytest.approx(1.0)
    assert "log_loss" in comparison.candidate
