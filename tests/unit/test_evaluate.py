"""The evaluation gate: thresholds and the champion on the same held-out rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from components.evaluate.core import evaluate
from kubeloop.metrics import regression_metrics
from kubeloop.registry import LoadedModel
from tests.utils.factories import example_spec

FEATURES = ["x1", "x2"]


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 2))
    y = 50 + 8 * X[:, 0] - 3 * X[:, 1] + rng.normal(0, 1, 600)
    df = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "energy_kwh": y})
    return df.iloc[:400], df.iloc[400:]


def fitted(estimator, train):
    return estimator.fit(train[FEATURES].to_numpy(), train["energy_kwh"])


def champion_of(model) -> LoadedModel:
    return LoadedModel("m", "1", "V1.0.0", model, FEATURES)


def test_regression_metrics_match_scikit_learn():
    y, p = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0])
    m = regression_metrics(y, p)
    assert m["mse"] == pytest.approx(mean_squared_error(y, p))
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, p)))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert m["r2"] == pytest.approx(r2_score(y, p))


def test_good_model_without_champion_passes(data):
    train, test = data
    decision = evaluate(fitted(LinearRegression(), train), test, FEATURES, example_spec("/x"))
    assert decision.passed, decision.reasons
    assert decision.metrics["r2"] > 0.9
    assert "no champion" in decision.notes[0]


def test_model_below_r2_threshold_fails_with_reason(data):
    train, test = data
    decision = evaluate(fitted(DummyRegressor(), train), test, FEATURES, example_spec("/x"))
    assert not decision.passed
    assert any(r.startswith("r2 ") and "below the minimum 0.8" in r for r in decision.reasons)


def test_model_worse_than_champion_fails(data):
    train, test = data
    spec = example_spec("/x")
    champion = champion_of(fitted(LinearRegression(), train))
    # Trained on one feature only: above the thresholds, but worse than the champion.
    weak = LinearRegression().fit(train[["x1"]].to_numpy(), train["energy_kwh"])
    assert evaluate(weak, test, ["x1"], spec).passed
    decision = evaluate(weak, test, ["x1"], spec, champion=champion, champion_version="V1.0.0")
    assert not decision.passed
    assert "worse than the champion" in decision.reasons[0]
    assert decision.champion["rmse"] < decision.metrics["rmse"]


def test_model_as_good_as_champion_passes(data):
    train, test = data
    model = fitted(LinearRegression(), train)
    decision = evaluate(model, test, FEATURES, example_spec("/x"), champion=champion_of(model))
    assert decision.passed
    assert decision.champion == decision.metrics


def test_champion_with_unknown_features_is_not_compared(data):
    train, test = data
    model = fitted(LinearRegression(), train)
    other = LoadedModel("m", "1", "V1.0.0", model, ["x1", "missing"])
    decision = evaluate(model, test, FEATURES, example_spec("/x"), champion=other)
    assert decision.passed and decision.champion is None
    assert "not compared" in decision.notes[0]


def test_classification_metrics_cover_string_labels_and_several_classes() -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from kubeloop.metrics import score

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    y = np.where(X[:, 0] > 0.5, "high", np.where(X[:, 0] < -0.5, "low", "mid"))
    metrics = score("classification", LogisticRegression().fit(X, y), X, y)
    assert set(metrics) == {"accuracy", "f1", "roc_auc", "log_loss"}
    assert metrics["accuracy"] > 0.9 and metrics["roc_auc"] > 0.9 and metrics["log_loss"] < 0.5
    binary = np.where(X[:, 1] > 0, "yes", "no")
    assert score("classification", LogisticRegression().fit(X, binary), X, binary)["roc_auc"] > 0.9
