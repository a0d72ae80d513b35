"""Fixtures for integration tests: real MLflow, Feast, DVC, PostgreSQL and Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeloop.settings import PlatformSettings
from tests.utils import services
from tests.utils.serving import Seeded, seed_example


@pytest.fixture
def service_settings(work_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PlatformSettings]:
    """Settings for the service-backed configuration: MLflow and the Feast registry on
    PostgreSQL, the Feast online store on Redis (each test gets fresh databases)."""
    with (
        services.postgres_database() as mlflow_db,
        services.postgres_database() as feast_db,
        services.redis_db(3) as redis_url,
    ):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
        monkeypatch.setenv("KUBELOOP_FEAST_ONLINE_STORE", "redis")
        monkeypatch.setenv("KUBELOOP_REDIS_URL", redis_url)
        monkeypatch.setenv("KUBELOOP_FEAST_REGISTRY", feast_db)
        yield PlatformSettings()


@pytest.fixture
def exported(settings: PlatformSettings, monkeypatch: pytest.MonkeyPatch) -> PlatformSettings:
    """Embedded settings also placed in the environment, as the CLI does for child steps."""
    for name, value in settings.export().items():
        monkeypatch.setenv(name, value)
    assert os.environ["KUBELOOP_WORK_DIR"] == str(settings.work_dir)
    return settings


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Seeded:
    """One trained champion and challenger of the example, shared by the server tests."""
    return seed_example(
        tmp_path_factory.getbasetemp() / "serving-seed", mlflow_template=mlflow_db_template
    )


@pytest.fixture(scope="module")
def own_seeded(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Seeded:
    """A seeded store of the module's own, for tests that register versions, move aliases or
    set canary weights: the shared ``seeded`` must stay as it was seeded for the others."""
    return seed_example(
        tmp_path_factory.mktemp("own-seed") / "work", mlflow_template=mlflow_db_template
    )
