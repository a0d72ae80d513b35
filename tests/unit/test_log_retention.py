"""Prediction log retention: what is older than the retention goes, the rest stays whole."""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from kubeloop.errors import SpecError
from kubeloop.log_retention import check_retention, cutoff, every_few_seconds, prune
from kubeloop.log_store import ensure_schema, feedback, make_engine, predictions
from kubeloop.spec import load_spec
from serving import shipper, spool
from serving.prediction_log import LogBatch, write_feedback
from tests.utils import services
from tests.utils.factories import EXAMPLE_SPEC
from tests.utils.serving import log_batch

DAY = 86_400.0


def logged(base: str, n: int, age_days: float) -> LogBatch:
    return replace(log_batch(base, n), ts=time.time() - age_days * DAY)


def fill(engine) -> None:
    """Through the server's own paths: 7 rows 40 days old, 4 rows 10 days old, 2 new; feedback
    for one old and one new row (the old one as it arrived then)."""
    ensure_schema(engine)
    segment = spool.to_table([logged("old", 7, 40), logged("mid", 4, 10), logged("new", 2, 0)])
    assert shipper.store_segments(engine, [("run/seg", segment)]) == 13
    write_feedback(engine, [("new-0", 1.0)])
    with engine.begin() as conn:
        arrived = datetime.now(UTC) - timedelta(days=39)
        conn.execute(feedback.insert(), [{"request_id": "old-3", "ts": arrived, "actual": 2.0}])


def kept(engine) -> tuple[list[str], list[str]]:
    with engine.connect() as conn:
        ids = sorted(conn.scalars(select(predictions.c.request_id)))
        labelled = sorted(conn.scalars(select(feedback.c.request_id)))
    return ids, labelled


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_prune_deletes_what_is_older_than_the_cutoff_in_batches(tmp_path: Path, store):
    with contextlib.ExitStack() as stack:
        if store == "sqlite":
            url = f"sqlite:///{tmp_path / 'predictions.db'}"
        else:
            url = stack.enter_context(services.postgres_database())
        engine = make_engine(url)
        stack.callback(engine.dispose)
        fill(engine)
        before = cutoff(30)

        dry = prune(engine, before, dry_run=True)
        assert (dry.predictions, dry.feedback) == (7, 1)
        assert len(kept(engine)[0]) == 13  # a dry run deletes nothing

        progress: list[tuple[str, int]] = []
        pruned = prune(engine, before, batch_rows=3, on_batch=lambda t, n: progress.append((t, n)))
        assert (pruned.predictions, pruned.feedback) == (7, 1)
        assert progress == [("predictions", 3), ("predictions", 6), ("predictions", 7)] + [
            ("feedback", 1)
        ]
        ids, labelled = kept(engine)
        assert ids == sorted([f"mid-{i}" for i in range(4)] + ["new-0", "new-1"])
        assert labelled == ["new-0"]

        again = prune(engine, before, batch_rows=3)
        assert (again.predictions, again.feedback) == (0, 0)
        assert len(kept(engine)[0]) == 6


def test_a_log_no_server_wrote_to_has_nothing_to_prune(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    pruned = prune(engine, cutoff(1))
    assert (pruned.predictions, pruned.feedback) == (0, 0)
    engine.dispose()


def test_a_retention_shorter_than_a_window_the_spec_reads_is_refused():
    spec = load_spec(EXAMPLE_SPEC)
    check_retention(1, spec)  # the example reads 24 hours back
    with pytest.raises(SpecError, match="monitoring.window_hours") as refused:
        check_retention(0.5, spec)
    assert refused.value.field == "monitoring.window_hours"
    longer = spec.model_copy(
        update={"retraining": spec.retraining.model_copy(update={"labelled_hours": 24 * 14})}
    )
    with pytest.raises(SpecError, match="keep at least 14 days"):
        check_retention(7, longer)


def test_the_prune_command_deletes_old_rows_and_refuses_a_too_short_retention(
    tmp_path: Path, monkeypatch
):
    from typer.testing import CliRunner

    from kubeloop.cli.main import app

    url = f"sqlite:///{tmp_path / 'log' / 'predictions.db'}"
    engine = make_engine(url)
    fill(engine)
    monkeypatch.setenv("KUBELOOP_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("KUBELOOP_PREDICTION_LOG_URL", url)
    command = ["log", "prune", "--spec", str(EXAMPLE_SPEC)]

    refused = CliRunner().invoke(app, [*command, "--keep-days", "0.25"])
    assert refused.exit_code == 2
    assert "monitoring.window_hours" in refused.output and "Traceback" not in refused.output

    monkeypatch.setenv("KUBELOOP_PREDICTION_LOG_RETENTION_DAYS", "5")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "deleted 11 predictions and 1 feedback rows" in result.output
    assert kept(engine) == (["new-0", "new-1"], ["new-0"])
    engine.dispose()


def test_progress_is_reported_at_most_every_few_seconds():
    seen: list[int] = []
    hourly = every_few_seconds(lambda _table, rows: seen.append(rows), seconds=3600)
    for rows in (50_000, 100_000, 150_000):
        hourly("predictions", rows)
    always = every_few_seconds(lambda _table, rows: seen.append(-rows), seconds=0)
    for rows in (1, 2):
        always("feedback", rows)
    assert seen == [50_000, -1, -2]
