"""The closed loop end to end: the demo scenario on small data, with real server processes.

Generate, train, approve, serve (a staging and a production server on one registry), drifting
traffic and feedback, monitoring (Evidently), a retraining launched through the kfp.local
pipeline, staging shadow and stress test, an approval that releases the version into the
production model, production canary steps and promotion. The first model is trained
in-process (``pipelines.steps``, the same step functions) to keep the test short; the
retraining goes through kfp.local as in ``make demo``.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kubeloop import model_store, registry

pytestmark = pytest.mark.slow


@pytest.fixture
def clean_environment():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_drift_retrains_through_the_pipeline_and_the_retrained_version_becomes_champion(
    tmp_path: Path, clean_environment
) -> None:
    from kubeloop.demo import DemoConfig, run_demo
    from monitoring.settings import MonitoringSettings

    config = DemoConfig(
        rows=3_000,
        drift_rows=1_500,
        later_rows=1_200,
        after_rows=300,
        initial_training="steps",
        shadow_requests=100,
        canary_predictions=(10, 20, 20),
        hold_seconds=2.0,
    )
    work = tmp_path / "demo"
    result = run_demo(work, config, say=lambda *a, **k: None, section=lambda *a, **k: None)
    print("demo phases (s):", {k: round(v, 1) for k, v in result.seconds.items()})

    # Production's monitoring read production's rows: drift was detected, and the figure was
    # exported for Prometheus, labelled with the production model.
    before = result.monitor_before
    assert before.model_name == "building-energy-production" and before.rows == 1_500
    assert "drift" in {t.kind for t in before.verdict.triggers}
    assert before.analysis.drift.share >= 0.3 and before.report.exists()
    exported = {
        (s.name, s.labels.get("version")): s.value
        for f in text_string_to_metric_families(result.exported_before)
        for s in f.samples
        if s.labels.get("model") == before.model_name
    }
    assert exported[("kubeloop_drift_share", "V1.0.0")] == pytest.approx(
        before.analysis.drift.share
    )
    assert exported[("kubeloop_drift_detected", "V1.0.0")] == 1.0

    # One incident, one retraining: through kfp.local, the next automatic revision.
    assert before.launched is not None and before.launched.run_id.startswith("local:")
    assert (result.champion_before, result.challenger) == ("V1.0.0", "V1.0.1")
    assert result.second_monitor.launched is None
    assert "cooldown" in result.second_monitor.claim.why
    assert any((work / "kfp").iterdir()), "the retraining ran as a kfp.local pipeline"

    # Staging shadow, an approval, production canary and promotion: production's champion moved
    # to the very version staging shadowed; staging's version records the release.
    production = "building-energy-production"
    assert result.production_model == production
    assert result.released["state"] == "released"
    assert result.released["approved_by"] == getpass.getuser()  # no registry auth here
    assert result.rollout.state == "promoted"
    assert result.champion_after == "V1.0.1"
    settings = MonitoringSettings(
        work_dir=work, **{"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    )
    client = model_store.configure(settings)
    champion = client.get_model_version_by_alias(production, registry.CHAMPION)
    assert result.released["released_as"] == f"{production}/{champion.version}"
    tags = champion.tags
    assert tags[registry.TAG_NAME] == "V1.0.1"
    assert tags[registry.TAG_RELEASED_FROM].startswith("building-energy/")
    assert tags["kubeloop.rollout.state"] == "promoted"
    assert {
        "kubeloop.rollout.shadow_result",  # staging's record travelled with the copy
        "kubeloop.rollout.stress_result",
        "kubeloop.rollout.canary_10_result",
        "kubeloop.rollout.canary_50_result",
        "kubeloop.rollout.canary_100_result",
        "kubeloop.lineage",
        "kubeloop.retrained_because",
    } <= set(tags)
    # staging's next rollout step: its champion follows production's (not at the approval)
    staging = client.get_model_version_by_alias("building-energy", registry.CHAMPION)
    assert result.staging_champion == staging.tags[registry.TAG_NAME] == "V1.0.1"
    assert staging.tags[registry.TAG_FOLLOWS] == f"{production}/{champion.version}"
    assert result.shadow_report and Path(result.shadow_report).exists()
    assert result.metrics_file == work / "metrics" / f"{production}.prom"

    # The new champion serves the drifted traffic better than the old one did.
    after = result.monitor_after
    assert after.version == str(champion.version)
    assert after.analysis.quality.current["rmse"] < before.analysis.quality.current["rmse"]
    # ...and is compared with what it learned: it trained on production's labelled rows, so
    # they are its reference, and the drift it was retrained for is not flagged again.
    assert after.analysis.drift.share < before.analysis.drift.share
    assert "drift" not in {t.kind for t in after.verdict.triggers}

    # Lineage: the DVC data version and the Feast materialization of the retraining run.
    lineage = result.lineage
    assert lineage["deployed"] and lineage["label"] == "V1.0.1"
    assert lineage["data"]["dvc_md5"] == champion.tags[registry.TAG_DATA]
    assert lineage["features"]["materialized_from"]
    assert lineage["traffic"]["canary_since"] and lineage["traffic"]["champion_since"]

    # The summary make demo prints: versions, figures before and after, where to look.
    from rich.console import Console

    from kubeloop.demo import epilogue, summary

    console = Console(width=120, record=True)
    console.print(summary(result))
    text = console.export_text() + "\n".join(epilogue(result))
    assert "V1.0.0" in text and "V1.0.1" in text and str(before.report) in text
    assert "cooldown until" in text and "promoted" in text
