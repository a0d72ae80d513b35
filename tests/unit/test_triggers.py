"""Every trigger goes through one launch slot: new-data threshold, supersede on manual triggers."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from kubeloop import registry
from monitoring import state
from monitoring.errors import LaunchError, SupersededWhileStarting
from monitoring.launch import Launched, Launcher
from monitoring.settings import MonitoringSettings
from monitoring.triggers import trigger_run
from pipelines.new_data import new_rows_reason
from tests.utils.factories import example_spec

SPEC = example_spec()


def test_new_rows_are_counted_against_the_last_trained_data_version() -> None:
    assert new_rows_reason(12_000, 10_000, None) is None  # no threshold: never
    assert new_rows_reason(10_999, 10_000, 1_000) is None
    assert new_rows_reason(11_000, 10_000, 1_000) == (
        "new data: 1,000 rows since the last trained data version (threshold 1,000)"
    )
    assert new_rows_reason(9_000, 10_000, 1_000) is None  # a rewritten, smaller source
    assert new_rows_reason(500, None, 1_000) == (
        "new data: 500 rows at the source and no trained data version yet"
    )


class Recorder(Launcher):
    """Starts runs that keep going (like KFP runs) and records terminations."""

    name = "kfp"

    def __init__(self, settings: MonitoringSettings) -> None:
        super().__init__(settings)
        self.started: list[str] = []
        self.terminated: list[str] = []

    def launch(self, spec, *, reason, source=None, on_start=None) -> Launched:
        run_id = f"run-{len(self.started) + 1}"
        self.started.append(reason)
        if on_start:
            on_start(run_id)
        return Launched(run_id, finished=False)

    def terminate(self, run_id: str) -> str:
        self.terminated.append(run_id)
        return f"{run_id}: terminated"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(tmp_path))
    return MonitoringSettings(), create_engine(f"sqlite:///{tmp_path / 'log.db'}")


def test_each_newer_trigger_terminates_the_run_in_progress_and_records_it(env) -> None:
    settings, engine = env
    launcher = Recorder(settings)
    first = trigger_run(
        SPEC, settings, launcher, trigger="schedule", reason="nightly", engine=engine
    )
    assert first.claim.superseded is None and first.launched is not None
    second = trigger_run(
        SPEC, settings, launcher, trigger="manual", reason="by hand", engine=engine
    )
    third = trigger_run(SPEC, settings, launcher, trigger="merge", reason="abc123", engine=engine)
    assert second.launched is not None and third.launched is not None
    assert launcher.terminated == ["run-1", "run-2"]
    assert state.supersessions(engine, SPEC.model_name) == {"run-1": "run-2", "run-2": "run-3"}
    record = state.read(engine, SPEC.model_name)
    assert record is not None and record.run_id == "run-3" and record.reason == "merge: abc123"


def test_a_run_superseded_while_starting_stops_itself_and_leaves_the_slot_to_the_newer(
    env,
) -> None:
    """The newer trigger cannot terminate a run whose handle does not exist yet; that run,
    once it has one, finds the slot taken, stops itself and frees nothing."""
    settings, engine = env
    launcher = Recorder(settings)

    class Overtaken(Recorder):
        """Submits its run after a manual trigger has claimed the slot meanwhile."""

        def launch(self, spec, *, reason, source=None, on_start=None) -> Launched:
            trigger_run(SPEC, settings, launcher, trigger="manual", reason="by hand", engine=engine)
            if on_start:
                on_start("slow-1")
            return Launched("slow-1", finished=False)

    slow = Overtaken(settings)
    with pytest.raises(SupersededWhileStarting) as err:
        trigger_run(SPEC, settings, slow, trigger="schedule", reason="nightly", engine=engine)
    assert slow.terminated == ["slow-1"] and "slow-1 was starting" in err.value.message
    assert launcher.started == ["by hand"] and launcher.terminated == []
    record = state.read(engine, SPEC.model_name)
    assert record is not None and record.status == state.RUNNING
    assert record.run_id == "run-1" and record.reason == "manual: by hand"  # the newer run's
    assert state.supersessions(engine, SPEC.model_name) == {"(starting)": "run-1"}


def test_a_launch_that_fails_after_being_overtaken_leaves_the_newer_run_its_slot(env) -> None:
    """A submission that fails once a newer trigger has taken the slot records its failure
    without freeing the slot: the newer run is still running, and a third trigger must see it
    (and supersede it), not an idle slot."""
    settings, engine = env
    launcher = Recorder(settings)

    class OvertakenThenDown(Recorder):
        """A manual trigger claims the slot while this submission waits on an API that then
        refuses it."""

        def launch(self, spec, *, reason, source=None, on_start=None) -> Launched:
            trigger_run(SPEC, settings, launcher, trigger="manual", reason="by hand", engine=engine)
            raise LaunchError("KFP API unreachable")

    with pytest.raises(LaunchError):
        trigger_run(
            SPEC,
            settings,
            OvertakenThenDown(settings),
            trigger="schedule",
            reason="nightly",
            engine=engine,
        )
    record = state.read(engine, SPEC.model_name)
    assert record is not None and record.status == state.RUNNING
    assert record.run_id == "run-1" and record.reason == "manual: by hand"


def test_deliberate_triggers_neither_wait_for_nor_hold_back_monitorings_cooldown(env) -> None:
    from datetime import timedelta

    settings, engine = env
    launcher = Recorder(settings)
    manual = trigger_run(SPEC, settings, launcher, trigger="manual", reason="x", engine=engine)
    assert manual.launched is not None
    # Monitoring right after a manual run: its cooldown counts from its own launches only.
    first = state.claim(
        engine,
        SPEC.model_name,
        now=state.utcnow(),
        cooldown=timedelta(hours=6),
        run_timeout=timedelta(hours=6),
        launcher="kfp",
        reason="drift",
    )
    assert first.granted and first.superseded is not None  # supersedes the manual run
    again = state.claim(
        engine,
        SPEC.model_name,
        now=state.utcnow(),
        cooldown=timedelta(hours=6),
        run_timeout=timedelta(hours=6),
        launcher="kfp",
        reason="drift",
    )
    assert not again.granted and again.why.startswith("cooldown until")
    # A merge inside monitoring's cooldown still starts at once.
    merge = trigger_run(SPEC, settings, launcher, trigger="merge", reason="abc", engine=engine)
    assert merge.launched is not None
    actions = [e["action"] for e in state.history(engine, SPEC.model_name)]
    assert actions[0] == "triggered" and actions[1] == "launched" and "cooldown" in actions


class Registering(Launcher):
    """A local run that registers the model's next version, as the pipeline's register step."""

    name = "local"

    def launch(self, spec, *, reason, source=None, on_start=None) -> Launched:
        from kubeloop import model_store

        client = model_store.configure(self.settings)
        client.create_registered_model(spec.model_name)
        version = client.create_model_version(
            spec.model_name, source=str(self.settings.work_dir / "m")
        )
        client.set_model_version_tag(spec.model_name, version.version, registry.TAG_NAME, "V1.0.0")
        return Launched("run-1", finished=True, succeeded=True, version="V1.0.0")

    def terminate(self, run_id: str) -> str:
        return run_id


def test_a_version_a_trigger_trained_says_why_in_its_lineage(work_dir: Path) -> None:
    """`kubeloop trigger new-data` (or schedule, merge, by hand): lineage's "retrained
    because" names the trigger and its reason, as it does for monitoring's retrainings."""
    from kubeloop import model_store
    from monitoring import lineage

    settings = MonitoringSettings()
    engine = create_engine(f"sqlite:///{work_dir / 'log.db'}")
    reason = "new data: 1,000 rows since the last trained data version (threshold 1,000)"
    trigger_run(
        SPEC, settings, Registering(settings), trigger="new_data", reason=reason, engine=engine
    )
    client = model_store.configure(settings)
    record = lineage.build(client, SPEC.model_name, "V1.0.0")
    assert record["registry"]["retrained_because"] == f"new_data: {reason}"
