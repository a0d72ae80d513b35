"""How a KFP run ended, as the launcher, the CLI and the notebook report it.

The register step runs only when the gate passed (``dsl.If``), so a run that succeeded either
registered a version or was rejected; the evaluate step tags the candidate's MLflow run with the
KFP run id, and the launcher reads the outcome there. The KFP side is the recording stub (no
cluster here); MLflow, the registry and the CLI are real.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kubeloop import model_store
from kubeloop.cli.main import app
from kubeloop.registry import GATE_REASONS_TAG, GATE_TAG, PIPELINE_RUN_TAG
from tests.utils.factories import EXAMPLE_SPEC, example_spec, sample_frame
from tests.utils.kfp_server import kfp_stub
from tests.utils.models import register_model, train_model

SPEC = example_spec()


def candidate(settings, *, passed: bool, reasons: str = "", register: bool = False) -> str:
    """A trained candidate whose MLflow run the evaluate step of KFP run ``run-1`` tagged."""
    trained = train_model(sample_frame(1_500), SPEC, settings, params={"max_iter": 20})
    client = model_store.configure(settings)
    client.set_tag(trained.run_id, PIPELINE_RUN_TAG, "run-1")
    client.set_tag(trained.run_id, GATE_TAG, "passed" if passed else "failed")
    client.set_tag(trained.run_id, GATE_REASONS_TAG, reasons)
    if register:
        return register_model(settings, SPEC, trained).label
    return ""


@pytest.mark.parametrize("wait", [True, False], ids=["cli-wait", "launcher-status"])
def test_a_succeeded_run_rejected_by_the_gate_reads_as_rejected(
    settings, tmp_path, monkeypatch, wait
):
    monkeypatch.setenv("HOME", str(tmp_path))
    candidate(settings, passed=False, reasons="r2 0.4100 is below the minimum 0.5")
    with kfp_stub() as stub:
        stub.run_state = "SUCCEEDED"
        if wait:
            result = CliRunner().invoke(
                app, ["run", "training", "--host", stub.host, "--wait", "30"]
            )
            assert result.exit_code == 1, result.output
            text = " ".join(result.output.split())
            assert (
                "run run-1: rejected by the evaluation gate: r2 0.4100 is below the minimum 0.5"
                in text
            )
        else:
            from monitoring.launch import KfpLauncher
            from monitoring.settings import MonitoringSettings

            seen = KfpLauncher(MonitoringSettings(kfp_host=stub.host)).status(
                "run-1", SPEC.model_name
            )
            assert seen is not None and seen.finished and seen.succeeded and seen.version == ""
            assert (
                seen.detail == "rejected by the evaluation gate: r2 0.4100 is below the minimum 0.5"
            )


def test_a_run_that_registered_reports_its_version_and_a_second_trigger_supersedes(
    settings, tmp_path, monkeypatch
):
    monkeypatch.setenv("HOME", str(tmp_path))
    label = candidate(settings, passed=True, register=True)
    with kfp_stub() as stub:
        stub.run_state = "SUCCEEDED"
        result = CliRunner().invoke(app, ["run", "training", "--host", stub.host, "--wait", "30"])
        assert result.exit_code == 0, result.output
        assert f"run run-1: registered {label}" in result.output
        # The slot still holds run-1 (only the monitor frees a cluster run's slot): a schedule
        # trigger now terminates it through the API before submitting its own run.
        stub.run_state = "RUNNING"
        again = CliRunner().invoke(app, ["trigger", "schedule", "--host", stub.host])
        assert again.exit_code == 0, again.output
        assert "superseded run run-1" in again.output
        assert [r.method for r in stub.requests if r.path.endswith("run-1:terminate")] == ["POST"]


def test_the_lineage_says_which_run_a_version_superseded(settings, tmp_path, monkeypatch):
    """A newer trigger terminates the run in progress; the version its own run registers
    carries the superseded run (``kubeloop lineage``: registry.supersedes)."""
    from sqlalchemy import create_engine

    from monitoring import lineage, state
    from monitoring.launch import Launched, Launcher
    from monitoring.settings import MonitoringSettings
    from monitoring.triggers import trigger_run

    label = candidate(settings, passed=True, register=True)

    class Cluster(Launcher):
        name = "kfp"
        terminated: list[str] = []

        def launch(self, spec, *, reason, source=None, on_start=None) -> Launched:
            run_id = "run-2" if self.terminated else "run-1"
            if on_start:
                on_start(run_id)
            if run_id == "run-1":
                return Launched(run_id, finished=False)
            return Launched(run_id, finished=True, succeeded=True, version=label, detail="ok")

        def terminate(self, run_id: str) -> str:
            self.terminated.append(run_id)
            return "terminated"

    monitoring_settings = MonitoringSettings()
    engine = create_engine(f"sqlite:///{tmp_path / 'slot.db'}")
    launcher = Cluster(monitoring_settings)
    trigger_run(SPEC, monitoring_settings, launcher, trigger="schedule", reason="x", engine=engine)
    done = trigger_run(
        SPEC, monitoring_settings, launcher, trigger="manual", reason="y", engine=engine
    )
    assert launcher.terminated == ["run-1"] and done.launched is not None
    assert state.supersessions(engine, SPEC.model_name) == {"run-1": "run-2"}
    client = model_store.configure(settings)
    assert lineage.build(client, SPEC.model_name, label)["registry"]["supersedes"] == "run-1"


def test_the_lineage_shows_the_gates_comparison_with_the_champion_on_the_same_rows(
    settings, monkeypatch
):
    """Two versions' own held-out metrics come from different windows (a retrained model
    looked 80% worse than the one it beat); an approver reads the gate's comparison."""
    from kubeloop import registry

    label = candidate(settings, passed=True, register=True)
    client = model_store.configure(settings)
    version = registry.find_version(client, SPEC.model_name, label)
    test_rmse = client.get_run(version.run_id).data.metrics["test_rmse"]
    client.log_metric(version.run_id, "champion_rmse", 2 * test_rmse)  # as the evaluate step
    result = CliRunner().invoke(app, ["lineage", label, "--spec", str(EXAMPLE_SPEC)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "passed; on the same rows as the champion then:" in text
    assert f"rmse {test_rmse:.4g} against {2 * test_rmse:.4g}" in text
    assert "replaced -" in text and "False" not in text  # it never replaced a champion
