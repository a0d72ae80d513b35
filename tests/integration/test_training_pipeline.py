"""The training pipeline end to end: kfp.local on both backends, revisions, gates, failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from components.ingest.core import ingest
from kubeloop import model_store, registry
from kubeloop.errors import DataQualityError
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ModelSpec
from pipelines.runner import run_local
from pipelines.steps import run_steps
from tests.utils.checks import assert_registered_with_full_run
from tests.utils.factories import EXAMPLE_SPEC, REPO, example_spec, sample_frame, write_sample

ROWS = 3_000


def small_spec(tmp_path: Path, rows: int = ROWS, **model_changes):
    source = write_sample(tmp_path / "raw" / "data.parquet", rows=rows)
    spec = example_spec(source=source)
    if model_changes:
        spec = spec.model_copy(update={"model": spec.model.model_copy(update=model_changes)})
    return spec


def versions(settings: PlatformSettings, name: str) -> list:
    client = model_store.configure(settings)
    return sorted(registry.all_versions(client, name), key=lambda v: int(v.version))


@pytest.mark.slow
@pytest.mark.services
def test_kfp_local_pipeline_on_postgres_and_redis(tmp_path, service_settings, monkeypatch):
    for name, value in service_settings.export().items():
        monkeypatch.setenv(name, value)
    spec = small_spec(tmp_path)
    assert run_local(spec, service_settings).version == "V1.0.0"
    assert_registered_with_full_run(service_settings, spec.model_name, "V1.0.0")
    local_store = f"sqlite:///{service_settings.work_dir / 'mlflow.db'}"
    assert not mlflow.MlflowClient(local_store, local_store).search_registered_models()
    assert not (service_settings.work_dir / "feast" / "online.db").exists()
    import redis

    host, rest = service_settings.redis_url.split(":")
    port, db = rest.split(",db=")
    assert redis.Redis(host=host, port=int(port), db=int(db)).dbsize() > 0


@pytest.mark.slow
def test_kfp_local_run_through_the_gate_registers_under_the_condition(tmp_path, settings, capfd):
    """kfp.local runs the register step inside its ``dsl.If`` when the gate passed (its own
    condition evaluator would skip it: pipelines/local_conditions.py).

    The run prints no warning a data scientist cannot act on: MLflow checks the input example
    as a DataFrame on a pipeline fitted on arrays, and scikit-learn warned "X has feature names"
    on every training run."""
    spec = small_spec(tmp_path)
    result = run_local(spec, settings)
    assert result.registered and result.version == "V1.0.0"
    assert result.detail == "registered V1.0.0"
    printed = capfd.readouterr()
    assert "feature names" not in printed.out + printed.err
    client = model_store.configure(settings)
    assert (
        registry.version_of_run(client, spec.model_name, result.mlflow_run_id).tags[
            registry.TAG_NAME
        ]
        == "V1.0.0"
    )


@pytest.mark.slow
def test_kfp_local_run_rejected_by_the_gate_registers_nothing_and_says_why(tmp_path, settings):
    """The register step sits under ``dsl.If`` on the gate: kfp.local skips it, and the run's
    output (the verdict) carries the reasons the launcher and the CLI print."""
    from kubeloop.spec import Threshold

    spec = small_spec(tmp_path)
    strict = spec.evaluation.model_copy(update={"thresholds": {"r2": Threshold(min=0.99999)}})
    result = run_local(spec.model_copy(update={"evaluation": strict}), settings)
    assert not result.registered
    assert result.reasons and "r2" in result.reasons[0] and "below the minimum" in result.reasons[0]
    assert result.detail.startswith("rejected by the evaluation gate: r2 ")
    assert versions(settings, spec.model_name) == []
    client = model_store.configure(settings)
    assert client.get_run(result.mlflow_run_id).data.tags["kubeloop.gate"] == "failed"


def test_retraining_increments_auto_and_a_new_manual_revision_resets_it(tmp_path, settings):
    spec = small_spec(tmp_path)
    assert run_steps(spec, settings).version == "V1.0.0"
    assert run_steps(spec, settings).version == "V1.0.1"
    revised = spec.model_copy(
        update={"model": spec.model.model_copy(update={"manual_revision": 1})}
    )
    assert run_steps(revised, settings).version == "V1.1.0"
    assert [v.tags[registry.TAG_NAME] for v in versions(settings, spec.model_name)] == [
        "V1.0.0",
        "V1.0.1",
        "V1.1.0",
    ]


def test_model_worse_than_the_champion_is_not_registered(tmp_path, settings):
    spec = small_spec(tmp_path)
    first = run_steps(spec, settings)
    client = model_store.configure(settings)
    registry.promote(client, spec.model_name, first.version, approve=True, approver="test")
    weak = ModelSpec.model_validate(
        {
            "tag": 1,
            "estimator": {
                "class": "sklearn.tree.DecisionTreeRegressor",
                "params": {"max_depth": 2},
            },
        }
    )
    loose = spec.evaluation.model_copy(update={"thresholds": {}})
    result = run_steps(spec.model_copy(update={"model": weak, "evaluation": loose}), settings)
    assert result.version == ""
    assert not result.decision["passed"]
    assert "worse than the champion" in result.decision["reasons"][0]
    assert [v.tags[registry.TAG_NAME] for v in versions(settings, spec.model_name)] == ["V1.0.0"]
    run = client.get_run(result.run_id)
    assert run.data.tags["kubeloop.gate"] == "failed"


def test_promotion_requires_approval_and_records_it(tmp_path, settings):
    spec = small_spec(tmp_path)
    run_steps(spec, settings)
    client = model_store.configure(settings)
    from kubeloop.errors import PromotionError

    with pytest.raises(PromotionError, match="--approve"):
        registry.promote(client, spec.model_name, "V1.0.0", approve=False)
    assert registry.by_alias(client, spec.model_name, registry.CHAMPION) is None
    promoted = registry.promote(client, spec.model_name, "challenger", approve=True, approver="ana")
    assert promoted.tags["kubeloop.approved_by"] == "ana"
    assert promoted.tags["kubeloop.promoted_from"] == "none"
    assert str(registry.by_alias(client, spec.model_name, registry.CHAMPION).version) == "1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_db_template):
    """One work folder with one registered version, shared by tests that must not change it."""
    import shutil

    root = tmp_path_factory.mktemp("trained")
    (root / "work").mkdir()
    shutil.copyfile(mlflow_db_template, root / "work" / "mlflow.db")
    # Explicit store: module fixtures of other files may have left MLFLOW_TRACKING_URI set.
    store = f"sqlite:///{root / 'work' / 'mlflow.db'}"
    settings = PlatformSettings(work_dir=root / "work", mlflow_tracking_uri=store)
    spec = small_spec(root)
    assert run_steps(spec, settings).version == "V1.0.0"
    return spec, settings


@pytest.mark.parametrize(
    ("breakage", "rule", "column"),
    [
        (lambda df: df.drop(columns=["humidity_pct"]), "missing_column", "humidity_pct"),
        (lambda df: df.assign(occupancy=["many"] * len(df)), "type", "occupancy"),
        (
            lambda df: df.assign(outdoor_temp_c=df["outdoor_temp_c"].mask(df.index % 10 < 3)),
            "max_null_fraction",
            "outdoor_temp_c",
        ),
    ],
    ids=["missing-column", "wrong-type", "30pct-nulls"],
)
def test_bad_data_stops_at_ingest_and_leaves_the_registry_unchanged(
    trained, tmp_path, breakage, rule, column
):
    spec, settings = trained
    before = [v.version for v in versions(settings, spec.model_name)]
    bad = tmp_path / "bad.parquet"
    breakage(sample_frame(ROWS)).to_parquet(bad)
    with pytest.raises(DataQualityError) as err:
        ingest(spec, settings, str(bad))
    assert (rule, column) in {(v.rule, v.column) for v in err.value.report.violations}
    assert rule in err.value.message and column in err.value.message
    assert [v.version for v in versions(settings, spec.model_name)] == before
    saved = json.loads(
        (settings.work_dir / "reports" / f"{spec.name}-data-quality.json").read_text()
    )
    assert saved["passed"] is False


@pytest.mark.slow
def test_cli_reports_an_ingest_failure_without_a_traceback(tmp_path, work_dir):
    bad = tmp_path / "bad.csv"
    sample_frame(ROWS).drop(columns=["energy_kwh"]).to_csv(bad, index=False)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubeloop",
            "run",
            "training",
            "--spec",
            str(EXAMPLE_SPEC),
            "--source",
            str(bad),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "failed at step 'ingest'" in proc.stderr
    assert "data-quality report" in proc.stderr
    assert "Traceback (most recent call last)" not in proc.stdout + proc.stderr
    # One progress line per step; the step's log goes to a file, its own message comes last.
    assert "ingest: failed after" in proc.stderr and '"spec"' not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "missing_column [energy_kwh]" in "\n".join(lines[-3:])
    assert lines[-1].startswith("report: ")
