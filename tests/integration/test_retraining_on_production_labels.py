"""Drift launches a retraining that trains on production's labelled rows, read by the pipeline's
ingest step from the prediction log on PostgreSQL (the cluster's log store), and the retrained
model beats the champion on drifted data it never saw.

The champion is trained in-process (``pipelines.steps``) on six weeks of readings; the served
predictions of two drifted weeks (heatwave, busier buildings, new equipment) and their ground
truth are written to the log as the server writes them; ``run_monitor`` detects the drift and
launches the kfp.local pipeline, whose steps are separate processes that share nothing with
this one but the services and the work folder's stores.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from feature_repo.engineering import FEATURES
from kubeloop import model_store, production_labels, registry
from kubeloop.data_version import dataset_path
from kubeloop.sample_data import DEFAULT_START, GeneratorConfig, generate
from kubeloop.spec import RetrainingSpec
from monitoring import lineage
from monitoring.job import run_monitor
from monitoring.launch import LocalLauncher
from monitoring.settings import MonitoringSettings
from monitoring.window import open_log
from pipelines.steps import run_steps
from tests.utils import services
from tests.utils.factories import example_spec
from tests.utils.monitoring import log_feedback, log_rows, production_rows

pytestmark = [pytest.mark.slow, pytest.mark.services]


def drifted(rows: int, seed: int) -> pd.DataFrame:
    return generate(
        GeneratorConfig(
            rows=rows,
            seed=seed,
            buildings=100,
            start=DEFAULT_START + timedelta(weeks=6),
            weeks=2,
            drift="both",
            strength=1.0,
        )
    )


def rmse(model, rows: pd.DataFrame, features: list[str]) -> float:
    error = model.predict(rows[features].to_numpy("float64")) - rows["actual"].to_numpy()
    return float(np.sqrt(np.mean(error**2)))


def test_a_drift_retraining_trains_on_labelled_production_rows_and_beats_the_champion(
    exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    with services.postgres_database() as log_url:
        monkeypatch.setenv("KUBELOOP_PREDICTION_LOG_URL", log_url)
        settings = MonitoringSettings()
        source = settings.work_dir / "raw" / "history.parquet"
        source.parent.mkdir(parents=True)
        generate(GeneratorConfig(rows=3_000, seed=7, buildings=100)).to_parquet(source)
        spec = example_spec(source=source, retraining=RetrainingSpec(labelled_hours=24))
        first = run_steps(spec, settings)
        client = model_store.configure(settings)
        champion = registry.promote(client, spec.model_name, first.version, approve=True)
        model = model_store.load_model(f"models:/{spec.model_name}/{champion.version}")
        features = FEATURES

        # Two weeks of drifted readings, served by the champion and labelled.
        served = production_rows(drifted(2_000, seed=8), spec, model, features)
        engine = open_log(log_url)
        now = datetime.now(UTC)
        ids = log_rows(
            engine,
            served,
            features,
            model_name=spec.model_name,
            version=str(champion.version),
            label=first.version,
            start=now - timedelta(hours=3),
            spacing=timedelta(seconds=2),
        )
        log_feedback(engine, ids, served["actual"].tolist(), now - timedelta(minutes=1))

        outcome = run_monitor(spec, settings, engine=engine, launcher=LocalLauncher(settings))

        assert "drift" in {t.kind for t in outcome.verdict.triggers}
        assert outcome.launched is not None and outcome.launched.succeeded
        assert outcome.launched.version == "V1.0.1", outcome.launched.detail

    # The retraining's dataset (what DVC versioned) holds the labelled rows it read from the log.
    dataset = pd.read_parquet(dataset_path(settings, spec.name))
    from_log = dataset[production_labels.is_logged(dataset)]
    assert len(from_log) == len(served)
    np.testing.assert_allclose(
        np.sort(from_log[spec.target].to_numpy()), np.sort(served["actual"].to_numpy())
    )
    assert (dataset[production_labels.ORIGIN] == production_labels.FROM_SOURCE).sum() == 3_000

    # Its lineage says so: how many labelled predictions, of which window.
    retrained = registry.find_version(client, spec.model_name, "V1.0.1")
    data = lineage.build(client, spec.model_name, "V1.0.1")["data"]
    assert int(data["production_rows"]) == len(served)
    assert float(data["labelled_hours"]) == spec.retraining.labelled_hours

    # On drifted readings neither model saw, the retrained model is the better one.
    challenger = model_store.load_model(f"models:/{spec.model_name}/{retrained.version}")
    unseen = production_rows(drifted(1_500, seed=9), spec, model, features)
    before, after = rmse(model, unseen, features), rmse(challenger, unseen, features)
    print(f"RMSE on unseen drifted readings: champion {before:.2f}, retrained {after:.2f}")
    assert after < 0.8 * before
