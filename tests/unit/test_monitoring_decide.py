"""The retraining decision and the persisted launch slot (cooldown, one run at a time)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from kubeloop.spec import MonitoringSpec
from monitoring import state
from monitoring.decide import decide

SPEC = MonitoringSpec(
    min_rows=100,
    drift_share=0.3,
    quality_loss=0.2,
    min_labelled_rows=50,
    new_labels=1_000,
    cooldown_minutes=60,
)
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def verdict(**changes):
    figures = dict(
        window_rows=500,
        drift_share=0.0,
        drifted=[],
        labelled_rows=200,
        quality_loss=0.0,
        primary_metric="rmse",
        new_labels=0,
    )
    return decide(SPEC, **{**figures, **changes})


def test_quiet_window_calls_for_nothing() -> None:
    result = verdict(new_labels=42)
    assert not result.retrain and result.triggers == []
    # how far the labels are from retraining is said, not left to guess
    assert result.notes == ["42 labelled rows since the last training; new_labels retrains at 1000"]


def test_drift_share_at_the_threshold_triggers_retraining() -> None:
    result = verdict(drift_share=0.3, drifted=["a", "b"])
    assert result.retrain and [t.kind for t in result.triggers] == ["drift"]
    assert "a, b" in result.reason


def test_quality_loss_beyond_the_threshold_triggers_retraining() -> None:
    assert [t.kind for t in verdict(quality_loss=0.25).triggers] == ["quality"]
    assert not verdict(quality_loss=0.1).retrain


def test_enough_new_labels_trigger_retraining() -> None:
    assert [t.kind for t in verdict(new_labels=1_000).triggers] == ["new_labels"]
    never = decide(
        SPEC.model_copy(update={"new_labels": None}),
        window_rows=500,
        drift_share=0,
        drifted=[],
        labelled_rows=0,
        quality_loss=None,
        primary_metric="rmse",
        new_labels=10**9,
    )
    assert not never.retrain


def test_small_windows_are_reported_but_never_judged() -> None:
    result = verdict(window_rows=99, drift_share=1.0, labelled_rows=49, quality_loss=5.0)
    assert not result.retrain
    assert len(result.notes) == 3 and "99 rows" in result.notes[0] and "49" in result.notes[1]
    assert not result.drift_judged and not result.quality_judged
    assert verdict().drift_judged and verdict().quality_judged


def test_every_crossed_threshold_is_named() -> None:
    result = verdict(drift_share=0.5, drifted=["t"], quality_loss=0.5, new_labels=5_000)
    assert [t.kind for t in result.triggers] == ["drift", "quality", "new_labels"]


@pytest.fixture
def engine(tmp_path: Path):
    return create_engine(f"sqlite:///{tmp_path / 'log.db'}")


def take(engine, now: datetime, cooldown: float = 60, timeout: float = 6 * 60):
    return state.claim(
        engine,
        "m",
        now=now,
        cooldown=timedelta(minutes=cooldown),
        run_timeout=timedelta(minutes=timeout),
        launcher="local",
        reason="drift",
    )


def test_first_trigger_gets_the_launch_slot(engine) -> None:
    claim = take(engine, NOW)
    assert claim.granted and claim.record is not None
    assert claim.record.status == state.RUNNING and claim.record.launched_at == NOW


def test_a_newer_trigger_supersedes_the_run_in_progress(engine) -> None:
    """Runs are never stopped by people, only superseded: past the cooldown, a trigger gets the
    slot and names the running run for its launcher to terminate; the lineage says who won."""
    assert take(engine, NOW).granted
    assert state.started(engine, "m", "run-1", launched_at=NOW)
    later = take(engine, NOW + timedelta(hours=2))  # past the cooldown, still running
    assert later.granted and later.why == "supersedes run run-1 (drift)"
    assert later.superseded is not None and later.superseded.run_id == "run-1"
    assert state.started(engine, "m", "run-2", launched_at=NOW + timedelta(hours=2))
    state.superseded(engine, "m", old_run="run-1", new_run="run-2", now=NOW + timedelta(hours=2))
    assert state.supersessions(engine, "m") == {"run-1": "run-2"}
    # The superseded run ending late frees nothing: the slot is run-2's.
    state.finish(engine, "m", now=NOW + timedelta(hours=3), outcome="canceled", run_id="run-1")
    record = state.read(engine, "m")
    assert record is not None and record.status == state.RUNNING and record.run_id == "run-2"


def test_a_trigger_without_cooldown_supersedes_at_once(engine) -> None:
    assert take(engine, NOW).granted
    manual = take(engine, NOW + timedelta(minutes=1), cooldown=0)
    assert manual.granted and manual.superseded is not None
    assert manual.why == "supersedes run (starting) (drift)"


def test_the_cooldown_stops_a_second_launch_after_the_first_finished(engine) -> None:
    assert take(engine, NOW).granted
    state.finish(engine, "m", now=NOW + timedelta(minutes=5), outcome="registered V1.0.1")
    second = take(engine, NOW + timedelta(minutes=30))
    assert not second.granted and second.why.startswith("cooldown until 2026-11-01 13:00:00")
    assert take(engine, NOW + timedelta(minutes=61)).granted


def test_a_run_past_the_run_timeout_is_lost_not_superseded(engine) -> None:
    assert take(engine, NOW).granted
    assert state.started(engine, "m", "run-1", launched_at=NOW)
    after = take(engine, NOW + timedelta(minutes=361))
    assert after.granted and after.superseded is None and after.why == "granted"


def test_every_decision_is_recorded(engine) -> None:
    take(engine, NOW)
    take(engine, NOW + timedelta(minutes=1))
    state.finish(engine, "m", now=NOW + timedelta(minutes=2), outcome="failed: boom", failed=True)
    take(engine, NOW + timedelta(minutes=3))
    actions = [e["action"] for e in state.history(engine, "m")]
    assert actions == ["launched", "cooldown", "failed", "cooldown"]
    assert state.read(engine, "m").outcome == "failed: boom"


def test_racing_triggers_launch_exactly_once(engine) -> None:
    state.create_all(engine)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        results.append(take(engine, NOW).granted)

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
