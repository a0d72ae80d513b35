"""The monitoring job against a real MLflow champion and a prediction log in SQLite."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from kubeloop import model_store
from kubeloop.sample_data import GeneratorConfig, generate
from kubeloop.spec import ProjectSpec
from monitoring import lineage, state
from monitoring.job import run_monitor
from monitoring.launch import Launched, Launcher
from monitoring.settings import MonitoringSettings
from monitoring.window import open_log
from tests.utils.factories import example_spec
from tests.utils.models import RegisteredModel, TrainedModel, register_model, train_model
from tests.utils.monitoring import log_feedback, log_rows, production_rows

# After the champion's training (new labels count from then), on the clock of this machine.
NOW = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
CONFIG = {"seed": 7, "buildings": 100}


@dataclass
class Loop:
    settings: MonitoringSettings
    spec: ProjectSpec
    trained: TrainedModel
    champion: RegisteredModel
    raw: pd.DataFrame


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Iterator[Loop]:
    """One champion for the module (training is the slow part), trained on generated data."""
    work = tmp_path_factory.mktemp("monitor") / "work"
    work.mkdir()
    shutil.copyfile(mlflow_db_template, work / "mlflow.db")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KUBELOOP_WORK_DIR", str(work))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        settings = MonitoringSettings()
        spec = example_spec()
        spec = spec.model_copy(
            update={
                "monitoring": spec.monitoring.model_copy(
                    update={
                        "min_rows": 200,
                        "min_labelled_rows": 50,
                        "new_labels": 5_000,
                        "cooldown_minutes": 60,
                    }
                ),
            }
        )
        raw = generate(GeneratorConfig(rows=3_000, **CONFIG))
        trained = train_model(raw, spec, settings, params={"max_iter": 60})
        champion = register_model(settings, spec, trained, champion=True)
        yield Loop(settings, spec, trained, champion, raw)


class FakeLauncher(Launcher):
    """Counts launches; ``finishes`` False behaves like a cluster run still going."""

    name = "fake"

    def __init__(self, settings: MonitoringSettings, finishes: bool = True) -> None:
        super().__init__(settings)
        self.finishes = finishes
        self.launches: list[str] = []
        self.done: set[str] = set()
        self.terminated: list[str] = []

    def launch(self, spec, *, reason, source=None, on_start=None) -> Launched:
        run_id = f"fake-{len(self.launches)}"
        self.launches.append(reason)
        if on_start:
            on_start(run_id)
        return Launched(
            run_id,
            finished=self.finishes,
            succeeded=self.finishes or None,
            version="",
            detail="fake run",
        )

    def status(self, run_id: str, model_name: str) -> Launched | None:
        return Launched(run_id, finished=run_id in self.done, succeeded=True, detail="done")

    def terminate(self, run_id: str) -> str:
        self.terminated.append(run_id)
        return f"{run_id}: terminated"


@pytest.fixture
def env(loop: Loop, tmp_path: Path):
    """Per test: its own prediction log, reports and metrics folders."""
    settings = loop.settings.model_copy(
        update={
            "prediction_log_url": f"sqlite:///{tmp_path / 'predictions.db'}",
            "reports_dir": tmp_path / "reports",
            "metrics_dir": tmp_path / "metrics",
        }
    )
    return settings, open_log(settings.log_url)


def serve_traffic(
    loop: Loop,
    engine,
    raw: pd.DataFrame,
    *,
    labelled: bool = True,
    end: datetime = NOW,
    served: tuple[str, str] | None = None,
) -> None:
    """What the server would log for these readings over the hour before ``end``, plus
    feedback; ``served`` (registered model, version) names what answered, else the project's
    champion."""
    rows = production_rows(raw, loop.spec, loop.trained.model, loop.trained.features)
    model_name, version = served or (loop.spec.model_name, loop.champion.version)
    ids = log_rows(
        engine,
        rows,
        loop.trained.features,
        model_name=model_name,
        version=version,
        prefix=model_name,
        label=loop.champion.label,
        start=end - timedelta(hours=1),
        spacing=timedelta(seconds=3600 / len(rows)),
    )
    if labelled:
        log_feedback(engine, ids, rows["actual"].tolist(), end - timedelta(minutes=1))


def like_training(loop: Loop, rows: int, seed: int) -> pd.DataFrame:
    """Readings from the training period (the generator's autumn cools week by week, so the
    held-out weeks are colder than the reference: not the same distribution)."""
    ordered = loop.raw.sort_values("event_timestamp")
    return ordered.head(int(len(ordered) * 0.8)).sample(rows, random_state=seed)


def drifted(rows: int = 800) -> pd.DataFrame:
    return generate(GeneratorConfig(rows=rows, drift="both", strength=1.0, **CONFIG))


def metrics_file(
    settings: MonitoringSettings, loop: Loop, model_name: str | None = None
) -> dict[str, float]:
    text = (settings.metrics_path / f"{model_name or loop.spec.model_name}.prom").read_text()
    return {
        s.name + json.dumps(s.labels, sort_keys=True): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_drifted_traffic_is_flagged_exported_reported_and_retrained(loop: Loop, env) -> None:
    settings, engine = env
    serve_traffic(loop, engine, drifted())
    launcher = FakeLauncher(settings)
    outcome = run_monitor(loop.spec, settings, now=NOW, launcher=launcher, engine=engine)

    assert outcome.rows == 800 and outcome.labelled_rows == 800
    assert outcome.analysis.drift.share >= loop.spec.monitoring.drift_share
    assert {"drift", "quality"} <= {t.kind for t in outcome.verdict.triggers}
    assert len(launcher.launches) == 1 and outcome.launched is not None
    exported = metrics_file(settings, loop)
    labels = {"model": loop.spec.model_name, "version": loop.champion.label}
    assert exported["kubeloop_drift_share" + json.dumps(labels, sort_keys=True)] == pytest.approx(
        outcome.analysis.drift.share
    )
    assert exported["kubeloop_retrain_launched" + json.dumps(labels, sort_keys=True)] == 1.0
    live = {**labels, "dataset": "live"}
    assert (
        exported["kubeloop_model_rmse" + json.dumps(live, sort_keys=True)]
        > exported[
            "kubeloop_model_rmse" + json.dumps({**labels, "dataset": "baseline"}, sort_keys=True)
        ]
    )
    # The task's primary metric as one series dashboards follow, whatever the task.
    primary = json.dumps({**live, "metric": "rmse"}, sort_keys=True)
    assert exported["kubeloop_model_primary_metric" + primary] == pytest.approx(
        exported["kubeloop_model_rmse" + json.dumps(live, sort_keys=True)]
    )
    html = outcome.report.read_text()
    assert outcome.report.exists() and "<html" in html[:2000].lower()
    # The report opens with what was compared and decided, before Evidently's plots.
    summary_at = html.index("kubeloop-summary")
    summary_block = html[summary_at : html.index("</section>", summary_at)]
    assert summary_at < html.index("<script", summary_at)
    assert "Retraining needed" in summary_block and loop.champion.label in summary_block
    assert f"{outcome.rows:,}" in summary_block and "drifted features" in summary_block
    # against which thresholds, and whether the predictions moved too
    assert f"retrains at {loop.spec.monitoring.drift_share:.0%})" in summary_block
    assert f"retrains at {loop.spec.monitoring.quality_loss:.0%} worse)" in summary_block
    assert "predictions drifted" in summary_block
    # ...and which rows "normal" was: the champion's training run and its reference sample.
    assert f"(training run {loop.trained.run_id}, " in summary_block
    summary = json.loads(outcome.summary.read_text())
    assert summary["reference"]["run_id"] == loop.trained.run_id
    assert summary["reference"]["rows"] > 0 and summary["reference"]["from"] is not None
    assert summary["decision"]["retrain"] and summary["launched"]["run_id"] == "fake-0"
    client = model_store.configure(settings)
    logged = [a.path for a in client.list_artifacts(loop.trained.run_id, "monitoring")]
    assert logged, "the report is logged to the champion's MLflow run"


def test_same_distribution_traffic_is_left_alone(loop: Loop, env) -> None:
    settings, engine = env
    serve_traffic(loop, engine, like_training(loop, 800, 1))
    launcher = FakeLauncher(settings)
    outcome = run_monitor(loop.spec, settings, now=NOW, launcher=launcher, engine=engine)
    assert outcome.analysis.drift.drifted == []
    assert not outcome.verdict.retrain and launcher.launches == []
    assert state.read(engine, loop.spec.model_name) is None


def test_a_window_too_small_to_judge_says_so_in_its_report(loop: Loop, env) -> None:
    """A handful of predictions gives figures, but no verdict: the report must not read as
    an all-clear, and the exported drift flag (what KubeloopDataDrift fires on) stays 0 even
    when the handful drifted."""
    settings, engine = env
    serve_traffic(loop, engine, drifted(20))
    outcome = run_monitor(
        loop.spec, settings, now=NOW, launcher=FakeLauncher(settings), engine=engine
    )
    assert not outcome.verdict.drift_judged and not outcome.verdict.retrain
    assert outcome.analysis.drift.share >= loop.spec.monitoring.drift_share  # measured
    html = outcome.report.read_text()
    assert "not everything could be judged" in html and "(measured, not judged)" in html
    assert "drift not judged: 20 rows in the window" in html
    labels = {"model": loop.spec.model_name, "version": loop.champion.label}
    assert metrics_file(settings, loop)["kubeloop_drift_detected" + json.dumps(labels)] == 0.0


def test_an_empty_window_is_reported_not_a_crash(loop: Loop, env) -> None:
    """A quiet window (a champion promoted a minute ago) failed the job with Evidently's
    'an empty column was provided'; on a cluster every such run failed."""
    from kubeloop.log_store import ensure_schema

    settings, engine = env
    ensure_schema(engine)  # the log as the servers leave it: its tables, no rows in the window
    outcome = run_monitor(
        loop.spec, settings, now=NOW, launcher=FakeLauncher(settings), engine=engine
    )
    assert outcome.rows == 0 and not outcome.verdict.retrain
    assert "drift not judged: 0 rows in the window" in outcome.report.read_text()
    assert "nothing was compared" in outcome.report.read_text()


def test_the_cooldown_stops_a_second_launch(loop: Loop, env) -> None:
    settings, engine = env
    serve_traffic(loop, engine, drifted())
    launcher = FakeLauncher(settings)
    first = run_monitor(loop.spec, settings, now=NOW, launcher=launcher, engine=engine)
    second = run_monitor(
        loop.spec, settings, now=NOW + timedelta(minutes=30), launcher=launcher, engine=engine
    )
    assert first.launched is not None and second.launched is None
    assert second.verdict.retrain and second.claim is not None and not second.claim.granted
    assert "cooldown" in second.claim.why
    assert len(launcher.launches) == 1


def test_a_newer_trigger_terminates_the_cluster_run_in_progress_and_starts_its_own(
    loop: Loop, env
) -> None:
    settings, engine = env
    spec = loop.spec.model_copy(
        update={"monitoring": loop.spec.monitoring.model_copy(update={"cooldown_minutes": 60})}
    )
    serve_traffic(loop, engine, drifted())
    launcher = FakeLauncher(settings, finishes=False)
    run_monitor(spec, settings, now=NOW, launcher=launcher, engine=engine)
    later = run_monitor(
        spec, settings, now=NOW + timedelta(hours=2), launcher=launcher, engine=engine
    )
    assert later.claim is not None and later.claim.why.startswith("supersedes run fake-0")
    assert launcher.terminated == ["fake-0"] and later.launched is not None
    assert state.supersessions(engine, loop.spec.model_name) == {"fake-0": "fake-1"}
    launcher.done.add("fake-0")  # the terminated run ends: the slot stays fake-1's
    after = run_monitor(
        spec,
        settings,
        now=NOW + timedelta(hours=2, minutes=5),
        launcher=launcher,
        engine=engine,
    )
    assert after.launched is None and "cooldown" in after.claim.why
    record = state.read(engine, loop.spec.model_name)
    assert record is not None and record.run_id == "fake-1" and record.status == state.RUNNING
    actions = [e["action"] for e in state.history(engine, loop.spec.model_name)]
    assert actions == ["launched", "launched", "superseded", "cooldown"]


def test_enough_new_labels_trigger_retraining_without_drift(loop: Loop, env) -> None:
    settings, engine = env
    spec = loop.spec.model_copy(
        update={"monitoring": loop.spec.monitoring.model_copy(update={"new_labels": 500})}
    )
    serve_traffic(loop, engine, like_training(loop, 800, 2))
    outcome = run_monitor(spec, settings, now=NOW, launch=False, engine=engine)
    assert [t.kind for t in outcome.verdict.triggers] == ["new_labels"]
    assert outcome.new_labels == 800 and outcome.launched is None


def test_lineage_links_data_features_run_and_registry_version(loop: Loop) -> None:
    client = model_store.configure(loop.settings)
    record = lineage.build(client, loop.spec.model_name, "champion")
    assert record["label"] == loop.champion.label and "champion" in record["aliases"]
    assert record["data"]["dvc_md5"] == "test-data"
    assert record["features"]["feature_service"] == loop.spec.features.service
    assert record["mlflow"]["run_id"] == loop.trained.run_id
    assert record["registry"]["approved_by"] == "tests"
    assert record["traffic"]["champion_since"]
    shown = lineage.show(client, loop.spec.model_name, loop.champion.label)
    assert shown["deployed"] is False
    lineage.record(client, loop.spec.model_name, loop.champion.version)
    assert lineage.show(client, loop.spec.model_name, "champion")["deployed"] is True


def test_monitor_and_lineage_commands_print_their_results(
    loop: Loop, env, tmp_path: Path, monkeypatch
) -> None:
    from kubeloop.cli.main import app

    settings, engine = env
    serve_traffic(loop, engine, drifted(400), end=datetime.now(UTC) - timedelta(seconds=5))
    spec_file = tmp_path / "spec.yaml"
    import yaml

    from kubeloop.spec import dump_spec

    spec_file.write_text(yaml.safe_dump(dump_spec(loop.spec)))
    for name, value in {
        "KUBELOOP_PREDICTION_LOG_URL": settings.log_url,
        "KUBELOOP_REPORTS_DIR": str(settings.reports_path),
        "KUBELOOP_METRICS_DIR": str(settings.metrics_path),
        "KUBELOOP_WORK_DIR": str(loop.settings.work_dir),
    }.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    result = runner.invoke(
        app, ["monitor", "--spec", str(spec_file), "--no-launch", "--window-hours", "2"]
    )
    assert result.exit_code == 0, result.output
    # the answer on stdout (to pipe or redirect), like versions and lineage
    assert "retraining needed" in result.stdout and "report:" in result.stdout
    result = runner.invoke(app, ["lineage", "champion", "--spec", str(spec_file), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["label"] == loop.champion.label
    result = runner.invoke(app, ["rollout", "run", "--spec", str(spec_file)])
    assert result.exit_code == 0 and "nothing to roll out" in result.output
    result = runner.invoke(app, ["rollout", "status", "--spec", str(spec_file)])
    assert result.exit_code == 0 and loop.champion.label in result.stdout  # a readable table
    result = runner.invoke(app, ["rollout", "status", "--spec", str(spec_file), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["label"] == loop.champion.label


def rendered_monitor_env(values_file: str) -> dict[str, str]:
    """The plain environment the chart gives the monitoring CronJob for an environment."""
    from tests.k8s import chart

    objects = chart.render_scenario(chart.CHART / values_file)
    (cron,) = [
        o for o in chart.kinds(objects, "CronJob") if o["metadata"]["name"].endswith("-monitor")
    ]
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_each_environment_monitors_the_model_it_serves_with_the_settings_it_renders(
    loop: Loop, env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Staging serves the project's model, production the copy an approval released: each
    environment's monitoring job reads its own server's rows and labels its figures with it."""
    from kubeloop import registry

    local, engine = env
    client = model_store.configure(local)
    production = str(loop.spec.rollout.production_model)
    released = registry.release(
        client, loop.spec.model_name, loop.champion.version, production, state_tags={}
    )
    registry.promote(client, production, str(released.version), approve=True, approver="tests")
    # One log, both servers: staging's callers look like training, production's drifted.
    serve_traffic(loop, engine, like_training(loop, 400, 1))
    serve_traffic(loop, engine, drifted(), served=(production, str(released.version)))

    outcomes = {}
    for values_file in ("values-staging.yaml", "values-prod.yaml"):
        with monkeypatch.context() as patch:
            for key, value in rendered_monitor_env(values_file).items():
                patch.setenv(key, value)
            # what points at the cluster, replaced by this machine's
            settings = MonitoringSettings(
                work_dir=local.work_dir,
                mlflow_tracking_uri=local.tracking_uri,
                prediction_log_url=local.log_url,
                reports_dir=local.reports_path,
                metrics_dir=local.metrics_path,
                pushgateway_url=None,
                kfp_host=None,
            )
        outcomes[values_file] = run_monitor(
            loop.spec, settings, now=NOW, launch=False, client=client, engine=engine
        )
    staging, prod = outcomes["values-staging.yaml"], outcomes["values-prod.yaml"]
    assert (staging.model_name, staging.version, staging.rows) == (
        loop.spec.model_name,
        loop.champion.version,
        400,
    )
    assert not staging.verdict.retrain
    assert (prod.model_name, prod.version, prod.rows) == (production, str(released.version), 800)
    assert {"drift", "quality"} <= {t.kind for t in prod.verdict.triggers}
    assert prod.report.parent == local.reports_path / production

    exported = metrics_file(local, loop, production)
    labels = {"model": production, "version": loop.champion.label}  # the copy keeps its name
    assert exported["kubeloop_drift_share" + json.dumps(labels, sort_keys=True)] == pytest.approx(
        prod.analysis.drift.share
    )
    alias = {**labels, "alias": "champion", "model_label": loop.champion.label}
    alias["model_version"] = str(released.version)
    assert exported["kubeloop_registry_alias_info" + json.dumps(alias, sort_keys=True)] == 1.0
    staging_figures = metrics_file(local, loop)
    staging_labels = {"model": loop.spec.model_name, "version": loop.champion.label}
    assert staging_figures[
        "kubeloop_drift_share" + json.dumps(staging_labels, sort_keys=True)
    ] == pytest.approx(staging.analysis.drift.share)
