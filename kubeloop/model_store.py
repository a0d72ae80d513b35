"""MLflow access shared by the steps, the server and monitoring.

Models are logged with skops (safe deserialization). skops refuses types it was not told to
trust, so the logged model records exactly the types it contains, and only types from the
libraries kubeloop builds models from are accepted.
"""

from __future__ import annotations

import os
from typing import Any

from kubeloop.settings import PlatformSettings

TRUSTED_MODULE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")
MODEL_ARTIFACT = "model"
REFERENCE_ARTIFACT = "reference/reference.parquet"


def configure(settings: PlatformSettings) -> Any:
    """Point MLflow at the configured store and return a client (called by entry points)."""
    import mlflow

    if settings.tracking_uri.startswith("sqlite:///"):
        settings.work_dir.mkdir(parents=True, exist_ok=True)
    if settings.s3_endpoint_url:
        # MLflow's S3 artifact repository reads only its own variable (when artifacts go to
        # s3:// directly rather than through a tracking server).
        os.environ["MLFLOW_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    return mlflow.MlflowClient()


def experiment_id(settings: PlatformSettings, name: str) -> str:
    """The experiment of a project, created with the configured artifact root if missing."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return mlflow.create_experiment(name, artifact_location=settings.artifact_root)


def trusted_types(model: Any) -> list[str]:
    """Types skops must trust to load ``model``; anything outside the allow-list is refused."""
    import skops.io

    types = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in types if not t.startswith(TRUSTED_MODULE_PREFIXES)]
    if foreign:
        raise ValueError(f"model holds types kubeloop will not trust: {foreign}")
    return types


def load_model(model_uri: str) -> Any:
    """Load a scikit-learn model logged by the train step."""
    import mlflow.sklearn

    return mlflow.sklearn.load_model(model_uri)
