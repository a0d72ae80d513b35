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


def classification_metrics(y_true, y_pred, y_score=None, classes=None) -> dict[str, float]:
    """Accuracy and weighted F1; with class probabilities (columns in ``classes`` order) also
    ROC AUC (one-vs-rest, weighted, for more than two classes) and log loss."""
    out = {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1": float(skm.f1_score(y_true, y_pred, average="weighted")),
    }
    present = np.unique(y_true)
    if y_score is not None and len(present) > 1:
        labels = list(classes) if classes is not None else list(range(y_score.shape[1]))
        out["log_loss"] = float(skm.log_loss(y_true, y_score, labels=labels))
        if len(labels) == 2:
            out["roc_auc"] = float(skm.roc_auc_score(y_true == labels[1], y_score[:, 1]))
        elif len(present) == len(labels):  # every class seen: one-vs-rest is defined
            out["roc_auc"] = float(
                skm.roc_auc_score(
                    y_true, y_score, multi_class="ovr", average="weighted", labels=labels
                )
            )
    return out


def score(task: str, model, X, y) -> dict[str, float]:
    """Metrics of ``model`` on ``(X, y)`` for the task."""
    if task == "classification":
        if hasattr(model, "predict_proba"):
            return classification_metrics(
                y, model.predict(X), model.predict_proba(X), model.classes_
            )
        return classification_metrics(y, model.predict(X))
    return regression_metrics(y, model.predict(X))
