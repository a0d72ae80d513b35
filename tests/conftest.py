"""Shared fixtures: every test gets its own work folder and MLflow store."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kubeloop.settings import PlatformSettings


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that need the container images run last, and the images start building now, in
    the background (tests/utils/images.py): minutes of building overlap the rest of the suite."""
    needs_images = [item for item in items if "base_image" in getattr(item, "fixturenames", ())]
    if needs_images and not config.option.collectonly:
        others = [item for item in items if "base_image" not in getattr(item, "fixturenames", ())]
        items[:] = others + needs_images
        from tests.utils.images import start_builds

        start_builds()


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store, made once: migrating a new store takes
    seconds, copying one takes milliseconds."""
    import mlflow

    work = tmp_path_factory.mktemp("mlflow-template")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return work / "mlflow.db"


@pytest.fixture
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db_template: Path) -> Path:
    """A throw-away work folder; MLflow, Feast, DVC and the prediction log all live in it."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(mlflow_db_template, work / "mlflow.db")
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(work))
    # MLflow writes MLFLOW_TRACKING_URI into os.environ when a store is chosen; recording it
    # with setenv first makes the teardown remove whatever a test left there.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    for name in list(os.environ):
        if name.startswith("KUBELOOP_") and name not in (
            "KUBELOOP_WORK_DIR",
            "KUBELOOP_REQUIRE_SERVICES",
        ):
            monkeypatch.delenv(name)
    return work


@pytest.fixture
def settings(work_dir: Path) -> PlatformSettings:
    return PlatformSettings()
