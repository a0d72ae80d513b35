"""Shared fixtures: every test gets its own work folder and MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from components.settings import PlatformSettings


@pytest.fixture
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A throw-away work folder; MLflow, Feast, DVC and the prediction log all live in it."""
    work = tmp_path / "work"
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(work))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
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
