"""Model quality metrics, the same in evaluation and in monitoring."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    mse = float(skm.mean_squared_error(y_true, y_pred))
    return {
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "mae": float(skm.mean_absolute_error(y_true, y_pred)),
        "r2": float(skm.r2_score(y_true, y_pred)),
    }


def classification_metrics(y_true, y_pred, y_score=None) -> dict[str, float]:
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1": float(skm.f1_score(y_true, y_pred, average="weighted")),
    }
    if y_score is not None and len(np.unique(y_true)) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y_true, y_score[:, 1]))
        out["log_loss"] = float(skm.log_loss(y_true, y_score))
    return out


def score(task: str, model, X, y) -> dict[str, float]:
    """Metrics of ``model`` on ``(X, y)`` for the task."""
    if task == "classification":
        proba = model.predict_proba(X) if hasattr(model, "predict_proba") else None
        return classification_metrics(y, model.predict(X), proba)
    return regression_metrics(y, model.predict(X))
