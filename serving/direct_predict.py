"""Predict with a scikit-learn ``GradientBoostingRegressor`` without its per-call input checks.

Why: the server hands the model a matrix it has already checked (float64, finite, the model's
features in training order), and a micro-batch is one ``predict`` call, yet each call checks
it again, twice (``validate_data``, then the first tree's ``_validate_X_predict``, with
narwhals asked each time whether the array is a dataframe), and predicts the init estimator
through its own checks: about 185 µs a call on an idle core, more under load, against 50 µs
for the trees of 100 rows. At 8 connections a call serves at most 8 requests, and those
checks were a tenth of the event loop's time (docs/benchmarks.md, "The model's own path").

What it does is what ``GradientBoostingRegressor.predict`` does after its checks: the init
estimator's constant (its raw prediction, computed once) plus every stage's trees, summed by
scikit-learn's own ``predict_stages`` on the same float32 input. It is used only when, at
load, it gives exactly the estimator's own predictions on rows on both sides of every split;
any other estimator, an init that is not constant, or a mismatch keeps ``model.predict``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Predict = Callable[[np.ndarray], np.ndarray]
PROBE_ROWS = 512


def direct_predictor(model: Any) -> Predict | None:
    """A checked fast ``predict`` for ``model``, or None when there is none for it."""
    from sklearn.dummy import DummyRegressor
    from sklearn.ensemble import GradientBoostingRegressor

    if type(model) is not GradientBoostingRegressor or not hasattr(model, "estimators_"):
        return None
    if not (isinstance(model.init_, str) and model.init_ == "zero") and (
        type(model.init_) is not DummyRegressor
    ):
        return None  # an init estimator whose raw prediction depends on the row
    width = int(model.n_features_in_)
    estimators, rate = model.estimators_, float(model.learning_rate)
    try:  # scikit-learn's private parts: a release without them keeps its own predict
        from sklearn.ensemble._gradient_boosting import predict_stages

        baseline = float(model._raw_predict_init(np.zeros((1, width), np.float32))[0, 0])
    except Exception:
        log.debug("no direct predict for %r", model, exc_info=True)
        return None

    def predict(X: np.ndarray) -> np.ndarray:
        if X.ndim != 2 or X.shape[1] != width:
            raise ValueError(f"X has shape {X.shape}; the model expects {width} features")
        rows = np.ascontiguousarray(X, dtype=np.float32)
        raw = np.full((len(rows), 1), baseline)
        predict_stages(estimators, rows, rate, raw)
        return raw.reshape(-1)

    return predict if agrees(model.predict, predict, probe_rows(model)) else None


def agrees(reference: Predict, candidate: Predict, X: np.ndarray) -> bool:
    """True when ``candidate`` gives exactly ``reference``'s predictions on ``X``."""
    try:
        expected = np.asarray(reference(X), dtype=np.float64).reshape(-1)
        got = candidate(X)
    except Exception:  # a candidate that fails is not used
        log.warning(
            "direct predict failed its check; the estimator's predict serves", exc_info=True
        )
        return False
    if got.shape != expected.shape or not np.array_equal(got, expected):
        log.warning("direct predict differs from the estimator's; the estimator's predict serves")
        return False
    return True


def probe_rows(model: Any, n: int = PROBE_ROWS, seed: int = 0) -> np.ndarray:
    """Rows whose values sit just below and just above the trees' split thresholds, feature by
    feature, so that the check takes both branches of the splits."""
    rng = np.random.default_rng(seed)
    width = int(model.n_features_in_)
    by_feature: list[list[float]] = [[] for _ in range(width)]
    for estimator in np.ravel(model.estimators_):
        tree = estimator.tree_
        for feature, threshold in zip(tree.feature.tolist(), tree.threshold.tolist(), strict=True):
            if feature >= 0:
                by_feature[feature].append(threshold)
    X = rng.normal(size=(n, width))
    for j, thresholds in enumerate(by_feature):
        if thresholds:
            picked = rng.choice(np.asarray(thresholds), size=n)
            X[:, j] = picked + rng.choice([-1.0, 1.0], size=n) * 1e-6 * (np.abs(picked) + 1.0)
    return X
