"""The prediction log writer: batched writes, a bounded queue, retries, counted drops."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select

from kubeloop.log_store import predictions
from serving.prediction_log import LogBatch, PredictionLog

NAMES = ("a", "b")
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"


def batch(base: str, n: int, role: str = "champion", entities=None) -> LogBatch:
    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    return LogBatch(
        base_id=base,
        ts=time.time(),
        positions=None,
        entity_ids=entities,
        feature_names=NAMES,
        features=X,
        predictions=X[:, 0] * 10.0,
        model_name="demo",
        model_version="3",
        model_label="V1.0.2",
        role=role,
    )


def wait_for(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def counted():
    totals = {"written": 0, "dropped": {}, "failed": 0, "queued": 0}

    def on_counts(written, dropped, failed, queued):
        totals["written"] += written
        for reason, n in dropped.items():
            totals["dropped"][reason] = totals["dropped"].get(reason, 0) + n
        totals["failed"] += failed
        totals["queued"] = queued

    return totals, on_counts


def test_log_writes_every_row_with_its_features_in_batches(tmp_path: Path, counted):
    totals, on_counts = counted
    url = f"sqlite:///{tmp_path / 'log' / 'predictions.db'}"
    log = PredictionLog(url, batch_rows=50, flush_seconds=0.05, on_counts=on_counts)
    log.start()
    try:
        assert log.submit(batch("r1", 1, entities=["1001"]))
        assert log.submit(batch("r2", 120))
        assert log.submit(batch("r3", 5, role="shadow"))
        assert log.wait_idle(30)
    finally:
        log.close()
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(predictions)) == 126
        row = conn.execute(select(predictions).where(predictions.c.request_id == "r2-7")).one()
        shadow = conn.scalar(select(func.count()).where(predictions.c.role == "shadow"))
    assert row.features == {"a": 14.0, "b": 15.0} and row.prediction == 140.0
    assert (row.model_version, row.model_label, row.role) == ("3", "V1.0.2", "champion")
    assert shadow == 5
    assert totals["written"] == 126 and totals["queued"] == 0
    assert log.counts()["written"] == 126


def test_failed_writes_are_retried_then_counted_as_dropped(counted):
    totals, on_counts = counted
    log = PredictionLog(
        UNREACHABLE,
        queue_rows=30,
        batch_rows=10,
        flush_seconds=0.05,
        retry_seconds=1.0,
        on_counts=on_counts,
    )
    log.start()
    try:
        assert log.submit(batch("a", 20))
        assert not log.submit(batch("b", 20))  # 20 queued + 20 > 30: dropped at once
        wait_for(lambda: log.pending == 0)
        log.report()
    finally:
        log.close(timeout=5)
    counts = log.counts()
    assert counts["dropped_queue_full"] == 20
    assert counts["dropped_write_error"] == 20 and counts["written"] == 0
    assert counts["failed_attempts"] >= 2  # retried before giving up
    assert totals["dropped"] == {"queue_full": 20, "write_error": 20, "writer_lost": 0}


def test_a_dead_writer_is_restarted_and_its_rows_counted(counted):
    totals, on_counts = counted
    log = PredictionLog(
        UNREACHABLE, batch_rows=10, flush_seconds=0.05, retry_seconds=60, on_counts=on_counts
    )
    log.start()
    try:
        assert log.submit(batch("a", 7))
        first = log._process
        first.kill()
        wait_for(lambda: log._process is not first and log._process.is_alive())
        assert log.counts()["dropped_writer_lost"] == 7 and log.pending == 0
        assert log.submit(batch("b", 3))  # the new writer takes rows again
    finally:
        log.close(timeout=3)


def test_submit_never_raises_even_when_closed():
    log = PredictionLog("sqlite://", queue_rows=10)
    assert not log.submit(batch("x", 2))  # never started: counted, not raised
    assert log.counts()["dropped_queue_full"] == 2
