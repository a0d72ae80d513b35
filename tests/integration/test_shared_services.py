"""Steps that share nothing but services: each step below gets its own work folder (as each
pod has its own disk) and finds what an earlier step left only in S3, PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from components.features.core import materialize_features, materialize_incremental
from components.ingest.core import ingest
from components.ingest.quality import normalize
from components.train.core import feature_names, fit_and_log, training_set
from kubeloop.feature_store import copy_rows, offline_table, open_store
from kubeloop.settings import PlatformSettings
from tests.utils import services
from tests.utils.factories import example_spec, sample_frame
from tests.utils.mlflow_server import mlflow_server
from tests.utils.s3 import CREDENTIALS, S3Server, s3_server

pytestmark = [pytest.mark.slow, pytest.mark.services]


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with s3_server("raw", "datasets", "mlflow") as server:
        yield server


def pod(tmp_path: Path, name: str, **settings) -> PlatformSettings:
    """The settings of one step's pod: its own empty work folder, the shared services."""
    return PlatformSettings(work_dir=tmp_path / name, **settings)


def test_ingest_reads_s3_and_versions_to_the_s3_dvc_remote(s3: S3Server, tmp_path: Path):
    local = tmp_path / "drop.parquet"
    sample_frame(1_500, buildings=15).to_parquet(local, index=False)
    s3.client().upload_file(str(local), "raw", "drops/2026-11/readings.parquet")
    spec = example_spec(source="s3://raw/drops/${DROP}/readings.parquet")
    settings = pod(tmp_path, "ingest", s3_endpoint_url=s3.endpoint, dvc_remote="s3://datasets/dvc")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DROP", "2026-11")  # resolved in the step, not by whoever submitted
        result = ingest(spec, settings)
    assert result.rows == 1_500
    md5 = result.version.md5
    stored = s3.keys("datasets", "dvc/")
    assert any(key.endswith(md5[2:]) for key in stored), stored


def test_feast_offline_rows_in_postgres_serve_training_and_the_materialize_job(tmp_path: Path):
    spec = example_spec(source="/unused")
    raw = normalize(sample_frame(1_000, buildings=10), spec)
    with (
        services.postgres_database() as registry,
        services.postgres_database() as offline,
        services.redis_db(5) as redis_url,
    ):
        shared = {
            "feast_registry": registry,
            "feast_offline_store": offline,
            "feast_online_store": "redis",
            "redis_url": redis_url,
        }
        result = materialize_features(raw, spec, pod(tmp_path, "features", **shared))
        assert result.offline.startswith("table kubeloop_")
        # The train step's pod: nothing on its disk, the same services.
        train_store = open_store(pod(tmp_path, "train", **shared), spec)
        labels = raw[["building_id", "event_timestamp", "energy_kwh"]]
        joined = training_set(train_store, spec, labels)
        names = feature_names(train_store, spec)
        assert len(joined) == len(raw) and not joined[names].isna().any().any()
        # The materialize CronJob's pod: reads the same table into Redis.
        job = pod(tmp_path, "materialize", **shared)
        views = materialize_incremental(spec, job)
        assert [offline_table(v) for v in views] == [result.offline.removeprefix("table ")]
        online = (
            open_store(job, spec)
            .get_online_features(
                features=train_store.get_feature_service(spec.features.service),
                entity_rows=[{"building_id": int(raw["building_id"].iloc[0])}],
            )
            .to_dict()
        )
        assert all(online[name][0] is not None for name in names)
        assert not (tmp_path / "train" / "feast" / "offline").exists()


def test_offline_rows_reach_postgresql_through_copy_as_the_frame_holds_them():
    """The features step writes a view's rows with COPY (``copy_rows``): a missing value is
    NULL (not the text 'nan'), timestamps keep their instant, text with quotes and commas
    survives, and the table is replaced, not appended to."""
    import pandas as pd
    import sqlalchemy

    frame = pd.DataFrame(
        {
            "building_id": [1001, 1002, 1003],
            "event_timestamp": pd.to_datetime(
                ["2026-09-01 00:33:50.25", "2026-09-01 02:10:37", "2026-09-02 23:59:59"],
                utc=True,
                format="ISO8601",
            ),
            "building_type": ["office", 'retail, "outlet"', None],
            "occupancy": [0.5, float("nan"), 12.0],
        }
    )
    with services.postgres_database() as url:
        engine = sqlalchemy.create_engine(url)
        try:
            for _ in range(2):
                frame.to_sql(
                    "rows", engine, if_exists="replace", index=False, chunksize=2, method=copy_rows
                )
            back = pd.read_sql_table("rows", engine)
            nulls = pd.read_sql_query("SELECT count(*) FROM rows WHERE occupancy IS NULL", engine)
        finally:
            engine.dispose()
    pd.testing.assert_frame_equal(back, frame)
    assert nulls.iloc[0, 0] == 1


def test_mlflow_server_proxies_artifacts_to_s3(s3: S3Server, tmp_path: Path):
    spec = example_spec(source="/unused")
    frame = normalize(sample_frame(600, buildings=6), spec)
    from feature_repo.engineering import FEATURES, building_features

    train = building_features(frame).assign(energy_kwh=frame["energy_kwh"].to_numpy())
    with (
        services.postgres_database() as backend,
        mlflow_server(backend, s3, "s3://mlflow/artifacts", tmp_path / "mlflow.log") as url,
        pytest.MonkeyPatch.context() as env,
    ):
        # The step has no S3 credentials or endpoint: artifacts travel through the server.
        for name in CREDENTIALS:
            env.delenv(name)
        env.setenv("MLFLOW_TRACKING_URI", url)
        run_id, model_uri, _ = fit_and_log(
            train, FEATURES, spec, pod(tmp_path, "train"), {"md5": "abc"}
        )
    keys = s3.keys("mlflow", "artifacts/")
    assert any(run_id in key and key.endswith("reference.parquet") for key in keys), keys
    assert any(key.endswith("/MLmodel") for key in keys), keys  # MLflow 3: models/m-<id>/
    assert model_uri.startswith("models:/")
