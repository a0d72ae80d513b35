"""Train: point-in-time training set from Feast, a scikit-learn Pipeline, tracked in MLflow."""
