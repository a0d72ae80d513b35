"""The direct predict of a GradientBoostingRegressor: exactly the estimator's predictions, and
only where it is checked to be."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving.direct_predict import agrees, direct_predictor, probe_rows

X, y = make_regression(n_samples=400, n_features=6, noise=5.0, random_state=0)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"init": "zero"},
        {"loss": "absolute_error"},
        {"loss": "huber", "alpha": 0.8},
        {"loss": "quantile", "alpha": 0.9},
        {"subsample": 0.7, "max_depth": 5, "n_estimators": 40},
    ],
)
def test_it_gives_exactly_the_estimators_predictions(params):
    model = GradientBoostingRegressor(random_state=0, **params).fit(X, y)
    predict = direct_predictor(model)
    assert predict is not None
    rows = np.random.default_rng(1).normal(size=(333, X.shape[1])) * 3
    for batch in (rows, rows[:1], X):
        assert np.array_equal(predict(batch), model.predict(batch))


def test_a_model_fitted_on_a_dataframe_predicts_the_same_from_the_servers_matrix():
    import pandas as pd

    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    model = GradientBoostingRegressor(random_state=0).fit(frame, y)
    predict = direct_predictor(model)
    assert predict is not None
    assert np.array_equal(predict(X), model.predict(frame))


@pytest.mark.parametrize(
    "model",
    [
        HistGradientBoostingRegressor(max_iter=20),
        make_pipeline(StandardScaler(), GradientBoostingRegressor(n_estimators=10)),
        GradientBoostingRegressor(n_estimators=10, init=LinearRegression()),  # init per row
        LinearRegression(),
    ],
    ids=["hist-gradient-boosting", "pipeline", "row-dependent-init", "linear"],
)
def test_other_estimators_keep_their_own_predict(model):
    assert direct_predictor(model.fit(X, y)) is None


def test_a_subclass_keeps_its_own_predict():
    class Shifted(GradientBoostingRegressor):
        def predict(self, X):
            return super().predict(X) + 1.0

    assert direct_predictor(Shifted(n_estimators=10).fit(X, y)) is None


def test_a_candidate_that_differs_or_fails_is_refused():
    model = GradientBoostingRegressor(n_estimators=10, random_state=0).fit(X, y)
    rows = probe_rows(model)
    assert agrees(model.predict, lambda X: model.predict(X), rows)
    assert not agrees(model.predict, lambda X: model.predict(X) + 1e-12, rows)
    assert not agrees(model.predict, lambda X: model.predict(X)[:-1], rows)

    def broken(X):
        raise RuntimeError("no")

    assert not agrees(model.predict, broken, rows)


def test_the_probe_rows_take_both_sides_of_every_split():
    # Features far from N(0, 1), where random normal rows would all fall on one side.
    model = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0)
    model.fit(X * 50 + 500, y)
    rows = probe_rows(model).astype(np.float32)
    leaves = reached = 0
    for estimator in model.estimators_.ravel():
        leaves += int((estimator.tree_.feature < 0).sum())
        reached += len(np.unique(estimator.apply(rows)))
    assert reached >= 0.95 * leaves, (reached, leaves)


def test_a_matrix_of_the_wrong_width_is_an_error_not_a_read_past_the_rows():
    model = GradientBoostingRegressor(n_estimators=10, random_state=0).fit(X, y)
    predict = direct_predictor(model)
    assert predict is not None
    with pytest.raises(ValueError, match="expects 6 features"):
        predict(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="expects 6 features"):
        predict(np.zeros(6))
