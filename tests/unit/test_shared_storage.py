"""Steps that share nothing but services: one S3 endpoint for every reader, the Feast
offline store on PostgreSQL, settings that reach a step's container."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubeloop.data_version import remote_config
from kubeloop.feature_store import definitions, offline_config, offline_table, repo_config
from kubeloop.settings import PlatformSettings
from tests.utils.factories import example_spec

ENDPOINT = "http://minio.storage:9000"


def test_one_endpoint_setting_reaches_pandas_dvc_and_mlflow(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("KUBELOOP_S3_ENDPOINT_URL", ENDPOINT)
    settings = PlatformSettings(work_dir=tmp_path)
    assert settings.storage_options("s3://raw/readings.parquet") == {"endpoint_url": ENDPOINT}
    assert settings.storage_options(str(tmp_path / "local.parquet")) is None
    assert remote_config(settings, "s3://datasets/dvc") == {
        "url": "s3://datasets/dvc",
        "endpointurl": ENDPOINT,
    }
    assert remote_config(settings, str(tmp_path / "remote")) == {"url": str(tmp_path / "remote")}
    exported = settings.export()
    assert exported["MLFLOW_S3_ENDPOINT_URL"] == ENDPOINT
    assert exported["KUBELOOP_S3_ENDPOINT_URL"] == ENDPOINT


def test_mlflows_own_endpoint_variable_is_the_same_setting(monkeypatch, tmp_path: Path):
    """The chart's ConfigMap sets MLFLOW_S3_ENDPOINT_URL: pandas and DVC follow it too."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", ENDPOINT)
    assert PlatformSettings(work_dir=tmp_path).s3_endpoint_url == ENDPOINT


def test_without_an_endpoint_s3_means_aws(tmp_path: Path):
    settings = PlatformSettings(work_dir=tmp_path)
    assert settings.storage_options("s3://raw/readings.parquet") is None
    assert remote_config(settings, "s3://datasets/dvc") == {"url": "s3://datasets/dvc"}
    assert "MLFLOW_S3_ENDPOINT_URL" not in settings.export()


def test_postgres_offline_store_config_comes_from_one_url(tmp_path: Path):
    settings = PlatformSettings(
        work_dir=tmp_path,
        feast_offline_store="postgresql+psycopg://feast:s3cret@db.internal:6543/feast?sslmode=require",
    )
    assert offline_config(settings) == {
        "type": "postgres",
        "host": "db.internal",
        "port": 6543,
        "database": "feast",
        "db_schema": "public",
        "user": "feast",
        "password": "s3cret",
        "sslmode": "require",
    }
    assert repo_config(settings, "p")["offline_store"]["type"] == "postgres"
    assert offline_config(PlatformSettings(work_dir=tmp_path)) == {"type": "duckdb"}


def test_an_offline_store_url_that_is_not_postgres_is_refused(tmp_path: Path):
    settings = PlatformSettings(work_dir=tmp_path, feast_offline_store="sqlite:///x.db")
    with pytest.raises(ValueError, match="KUBELOOP_FEAST_OFFLINE_STORE must be a PostgreSQL URL"):
        offline_config(settings)


@pytest.mark.parametrize("declared", [False, True])
def test_file_sources_become_postgres_tables_with_the_same_columns(declared, tmp_path: Path):
    from feast import FeatureView, FileSource
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )

    spec = example_spec(source="/unused")
    if declared:
        from tests.unit.test_declared_features import spec_with

        spec = spec_with()
    files = definitions(spec, PlatformSettings(work_dir=tmp_path))
    tables = definitions(
        spec, PlatformSettings(work_dir=tmp_path, feast_offline_store="postgresql://u:p@h/feast")
    )
    file_views = {o.name: o for o in files if isinstance(o, FeatureView)}
    table_views = [o for o in tables if isinstance(o, FeatureView)]
    assert table_views and not any(isinstance(o, FileSource) for o in tables)
    for view in table_views:
        source = view.batch_source
        assert isinstance(source, PostgreSQLSource)
        before = file_views[view.name].batch_source
        assert (source.name, source.timestamp_field) == (before.name, before.timestamp_field)
        assert source.get_table_query_string() == offline_table(before.name)
    # The local default keeps absolute Parquet paths under the work folder.
    assert all(str(v.batch_source.path).startswith(str(tmp_path)) for v in file_views.values())


def test_docker_run_args_are_json_in_the_environment(monkeypatch, tmp_path: Path):
    args = {"runtime": "runc", "ulimits": [{"name": "nofile", "soft": 1024, "hard": 1024}]}
    monkeypatch.setenv("KUBELOOP_DOCKER_RUN_ARGS", json.dumps(args))
    settings = PlatformSettings(work_dir=tmp_path)
    assert settings.docker_run_args == args
    assert json.loads(settings.export()["KUBELOOP_DOCKER_RUN_ARGS"]) == args
