"""A model that can be told, while it serves, to fail or to slow down: the rollout tests need a
champion or a candidate that misbehaves inside a real server process. The switch is a file: its
presence makes every ``predict`` fail (``mode="fail"``) or sleep (``mode="slow"``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator, RegressorMixin


class Switchable(RegressorMixin, BaseEstimator):
    """Predicts with ``inner`` unless the file ``flag`` exists."""

    def __init__(self, inner: Any = None, flag: str = "", mode: str = "fail", delay: float = 0.4):
        self.inner = inner
        self.flag = flag
        self.mode = mode
        self.delay = delay

    def fit(self, X, y=None):
        return self

    def predict(self, X):
        if self.flag and Path(self.flag).exists():
            if self.mode == "fail":
                raise RuntimeError(f"switched to fail by {self.flag}")
            time.sleep(self.delay)
        return self.inner.predict(X)


def register_switchable(client: Any, name: str, base_version: str, flag: Path, mode: str) -> str:
    """Register a new version of ``name``: ``base_version``'s model behind a switch (pickled,
    as the class is not one skops trusts); returns its registry number."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import get_model_info

    from kubeloop import registry
    from kubeloop.model_store import load_model

    base = client.get_model_version(name, base_version)
    uri = f"models:/{name}/{base_version}"
    metadata = get_model_info(uri).metadata
    model = Switchable(load_model(uri), str(flag), mode)
    with mlflow.start_run(run_name=f"switchable-{mode}"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="cloudpickle",
            metadata=metadata,
            pip_requirements=["scikit-learn"],  # no inference: it takes ~40 s per model
        )
    version = mlflow.register_model(
        info.model_uri,
        name,
        tags={**base.tags, registry.TAG_NAME: f"V9.{mode}.{time.time_ns() % 10**6}"},
    )
    return str(version.version)
