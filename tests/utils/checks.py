"""Assertions shared by tests of the training pipeline."""

from __future__ import annotations

import mlflow
import pandas as pd

from kubeloop import model_store, registry
from kubeloop.settings import PlatformSettings


def assert_registered_with_full_run(settings: PlatformSettings, name: str, label: str) -> None:
    client = model_store.configure(settings)
    version = client.get_model_version_by_alias(name, registry.CHALLENGER)
    assert version.tags[registry.TAG_NAME] == label
    run = client.get_run(version.run_id)
    assert run.data.params["estimator"] == "sklearn.ensemble.HistGradientBoostingRegressor"
    assert run.data.params["estimator.max_iter"] == "150"
    assert {"test_rmse", "test_mse", "test_mae", "test_r2"} <= set(run.data.metrics)
    assert run.data.metrics["test_r2"] > 0.8
    data_version = run.data.tags["kubeloop.data_version"]
    assert len(data_version) == 32 and version.tags[registry.TAG_DATA] == data_version
    assert run.data.tags["mlflow.source.git.commit"]
    assert run.data.tags["kubeloop.feast_materialized"].count("/") == 1
    info = mlflow.models.get_model_info(f"models:/{name}/{version.version}")
    assert [c["name"] for c in info.signature.inputs.to_dict()] == info.metadata["features"]
    assert info.saved_input_example_info is not None
    reference = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path=model_store.REFERENCE_ARTIFACT
        )
    )
    assert {"prediction", "energy_kwh", *info.metadata["features"]} <= set(reference.columns)
    pointer = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/data/dataset.parquet.dvc")
    assert data_version in pointer
