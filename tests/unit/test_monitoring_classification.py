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
from monitoring.window import PROBABILITIES, open_log, read_paired, read_window
from serving.prediction_log import LogBatch, write_feedback
from serving.shipper import store_segments
from serving.spool import to_table

FEATURES = ("a", "b")
CLASSES = np.array(["class_0", "class_1", "class_2"])
START = datetime.now(UTC) - timedelta(minutes=30)


def probabilities(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """Rows of class probabilities; ``shift`` moves mass towards class_2."""
    rng = np.random.default_rng(seed)
    raw = rng.dirichlet([1.0, 1.0, 1.0 + shift], size=n)
    return raw


def log_classes(engine, base: str, proba: np.ndarray, role: str = "champion", version="1"):
    """Rows stored the way the server stores them: spool table, then the shipper."""
    X = np.random.default_rng(1).normal(size=(len(proba), 2))
    batch = LogBatch(
        base_id=base,
        ts=START.timestamp() + 60,
        positions=None,
        entity_ids=None,
        feature_names=FEATURES,
        features=X,
        predictions=proba,
        classes=CLASSES,
        model_name="wine",
        model_version=version,
        model_label=f"V1.0.{int(version) - 1}",
        role=role,
    )
    store_segments(engine, [(f"run/{base}-{role}", to_table([batch]))])
    return [f"{base}-{i}" for i in range(len(proba))], X


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
    ids, _ = log_classes(engine, "r", proba)
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
        labelled[PROBABILITIES],
    )
    y, predicted = actual[:120], CLASSES[proba[:120].argmax(axis=1)]
    assert q["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert q["f1"] == pytest.approx(skm.f1_score(y, predicted, average="weighted"))
    assert q["log_loss"] == pytest.approx(skm.log_loss(y, proba[:120], labels=list(CLASSES)))
    assert q["roc_auc"] == pytest.approx(
        skm.roc_auc_score(y, proba[:120], multi_class="ovr", average="weighted")
    )


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
    ids, _ = log_classes(engine, "s", proba)
    worse = np.roll(proba, 1, axis=1)  # the candidate ranks the classes wrongly
    log_classes(engine, "s", worse, role="shadow", version="2")
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
