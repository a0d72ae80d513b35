"""The prediction log: spooled to disk, shipped in bulk, exactly once; drops only when the
spool's disk budget is full; a dead server's spool is adopted and its lost rows counted."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select

from kubeloop.log_store import ensure_schema, make_engine, predictions
from serving import shipper, spool
from serving.prediction_log import LogBatch, PredictionLog
from tests.utils import services
from tests.utils.serving import log_batch

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"


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


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log' / 'predictions.db'}"


def stored(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(predictions.c.request_id)))
    finally:
        engine.dispose()


def test_log_spools_then_stores_every_row_with_its_features(tmp_path: Path, counted):
    totals, on_counts = counted
    url = sqlite_url(tmp_path)
    log = PredictionLog(url, tmp_path / "spool", flush_seconds=0.05, on_counts=on_counts)
    log.start()
    try:
        assert log.submit(log_batch("r1", 1, entities=["1001"]))
        assert log.submit(log_batch("r2", 120))
        assert log.submit(log_batch("r3", 5, role="shadow"))
        assert log.wait_idle(30)
    finally:
        log.close()
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(predictions)) == 126
        row = conn.execute(select(predictions).where(predictions.c.request_id == "r2-7")).one()
        first = conn.execute(select(predictions).where(predictions.c.request_id == "r1-0")).one()
        shadow = conn.scalar(select(func.count()).where(predictions.c.role == "shadow"))
    assert row.features == {"a": 14.0, "b": 15.0} and row.prediction == 140.0
    assert (row.model_version, row.model_label, row.role) == ("3", "V1.0.2", "champion")
    assert first.entity_id == "1001" and row.entity_id is None
    assert abs(row.ts.timestamp() - time.time()) < 60
    assert shadow == 5
    assert totals["written"] == 126 and totals["queued"] == 0
    assert log.counts()["written"] == 126
    assert list((tmp_path / "spool").iterdir()) == []  # shipped and cleaned up


def test_canary_positions_keep_their_request_ids(tmp_path: Path):
    part = log_batch("mix", 3)
    part = LogBatch(**{**part.__dict__, "positions": [4, 0, 9]})
    table = shipper.store_table(spool.to_table([log_batch("whole", 2), part]))
    assert table["request_id"].to_pylist() == ["whole-0", "whole-1", "mix-4", "mix-0", "mix-9"]


def test_database_down_rows_wait_on_disk_and_the_next_server_ships_them(tmp_path, counted):
    totals, on_counts = counted
    root = tmp_path / "spool"
    down = PredictionLog(UNREACHABLE, root, flush_seconds=0.05, drain_seconds=0.5)
    down.start()
    try:
        for i in range(20):
            assert down.submit(log_batch(f"d{i}", 10))
        down.flush()
        wait_for(lambda: down.counts()["failed_attempts"] >= 2)
    finally:
        down.close()
    counts = down.counts()
    assert counts["written"] == 0 and counts["queued"] == 200
    assert counts["dropped_queue_full"] == counts["dropped_write_error"] == 0
    assert sum(len(spool.segments(d)) for d in spool.run_dirs(root)) >= 1

    url = sqlite_url(tmp_path)
    up = PredictionLog(url, root, flush_seconds=0.05, on_counts=on_counts)
    up.start()
    try:
        wait_for(
            lambda: (
                totals["written"] + up.counts()["written"] >= 200 and not spool.run_dirs(root)[1:]
            )
        )
    finally:
        up.close()
    assert sorted(stored(url)) == sorted(f"d{i}-{j}" for i in range(20) for j in range(10))
    assert spool.run_dirs(root) == []


def test_full_spool_drops_and_counts(tmp_path: Path, counted):
    totals, on_counts = counted
    log = PredictionLog(
        UNREACHABLE,
        tmp_path / "spool",
        spool_max_bytes=20 * (16 + spool.ROW_OVERHEAD),
        flush_seconds=0.05,
        drain_seconds=0.2,
        on_counts=on_counts,
    )
    log.start()
    try:
        assert log.submit(log_batch("a", 20))
        assert not log.submit(log_batch("b", 20))  # over the disk budget: dropped at once
        log.report()
    finally:
        log.close()
    counts = log.counts()
    assert counts["dropped_queue_full"] == 20 and counts["accepted"] == 40
    assert totals["dropped"]["queue_full"] == 20


def test_rows_a_killed_server_never_spooled_are_counted(tmp_path: Path):
    root = tmp_path / "spool"
    dead = spool.SpoolWriter(root, max_bytes=2**30, flush_seconds=60)
    dead.open()
    dead.submit(log_batch("kept", 4))
    dead.flush()  # spooled
    dead.submit(log_batch("lost", 3))  # still in memory when the process "dies"
    dead.counts.base.flush()
    dead_dir = dead.run_dir
    import os

    os.close(dead._fd)  # the lock of a dead process is free

    url = sqlite_url(tmp_path)
    engine = make_engine(url)
    counters = PredictionLog(url, root)._counters
    own = root / "own"
    own.mkdir(parents=True)
    ship = shipper.Shipper(engine, root, own, counters, batch_rows=1000)
    assert ship.step() == 4
    assert ship.step() == 0  # finishes the adopted run: counts what never reached the spool
    assert counters[shipper.LOST] == 3 and counters[shipper.WRITTEN] == 4
    assert not dead_dir.exists()
    assert sorted(stored(url)) == [f"kept-{i}" for i in range(4)]


def test_a_segment_stored_twice_is_skipped(tmp_path: Path):
    engine = make_engine(sqlite_url(tmp_path))
    ensure_schema(engine)
    table = spool.to_table([log_batch("once", 5)])
    assert shipper.store_segments(engine, [("run/seg-1.arrow", table)]) == 5
    # stored, then the process died before deleting the file: the next ship skips it
    assert shipper.store_segments(engine, [("run/seg-1.arrow", table)]) == 0
    assert len(stored(str(engine.url))) == 5


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_segment_is_stored_in_chunks_whole_and_at_once(tmp_path: Path, monkeypatch, store):
    """A segment bigger than a chunk (a busy flush interval) is turned into rows a chunk at a
    time, to bound the shipper's memory, in the one transaction: every row once with its own
    features, beside the next segment's, or none of them."""
    monkeypatch.setattr(shipper, "STORE_CHUNK_ROWS", 3)
    with contextlib.ExitStack() as stack:
        if store == "sqlite":
            url = sqlite_url(tmp_path)
        else:
            url = stack.enter_context(services.postgres_database())
        engine = make_engine(url)
        stack.callback(engine.dispose)
        ensure_schema(engine)
        big = spool.to_table([log_batch("big", 7), log_batch("more", 1)])
        small = spool.to_table([log_batch("small", 2)])
        named = [("run/seg-1.arrow", big), ("run/seg-2.arrow", small)]
        assert shipper.store_segments(engine, named) == 10
        with engine.connect() as conn:
            rows = {r.request_id: r.features for r in conn.execute(select(predictions))}
        assert sorted(rows) == sorted(
            [f"big-{i}" for i in range(7)] + ["more-0", "small-0", "small-1"]
        )
        assert rows["big-6"] == {"a": 12.0, "b": 13.0} and rows["small-1"] == {"a": 2.0, "b": 3.0}
        # refused in its 2nd chunk
        bad = spool.to_table([log_batch("ok", 4), log_batch("x" * 100, 1)])
        if store == "postgresql":  # SQLite does not enforce VARCHAR lengths
            with pytest.raises(Exception, match="too long"):
                shipper.store_segments(engine, [("run/seg-3.arrow", bad)])
            assert len(stored(url)) == 10  # the first chunk was rolled back with the rest


def test_postgres_copy_stores_rows_and_refuses_bad_segments_alone(tmp_path: Path):
    with services.postgres_database() as url:
        engine = make_engine(url)
        root = tmp_path / "spool"
        writer = spool.SpoolWriter(root, max_bytes=2**30, flush_seconds=60)
        writer.open()
        writer.submit(log_batch("good", 50, entities=[str(i) for i in range(50)]))
        writer.flush()
        writer.submit(log_batch("x" * 100, 2))  # request id longer than the column: refused
        writer.flush()
        writer.submit(log_batch("after", 3))
        writer.flush()
        counters = PredictionLog(url, root)._counters
        ship = shipper.Shipper(engine, root, writer.run_dir, counters, batch_rows=10_000)
        with pytest.raises(Exception, match="too long"):
            ship.step()  # several segments in one transaction: refused together
        ship.step_one_by_one()  # the good one
        ship.step_one_by_one()  # the bad one, moved aside
        ship.step()
        assert counters[shipper.REJECTED] == 2 and counters[shipper.WRITTEN] == 53
        assert len(list((writer.run_dir / spool.REJECTED).iterdir())) == 1
        with engine.connect() as conn:
            row = conn.execute(
                select(predictions).where(predictions.c.request_id == "good-7")
            ).one()
        assert row.features == {"a": 14.0, "b": 15.0} and row.entity_id == "7"
        assert row.ts.tzinfo is not None and abs(row.ts.timestamp() - time.time()) < 60
        writer.close()
        writer.release()
        engine.dispose()


def test_postgres_holds_each_value_as_the_segment_does():
    """The binary COPY: numbers to the last bit, timestamps to the microsecond and in UTC,
    non-finite features as JSON null, text with quotes, commas, newlines and non-ASCII as
    sent, missing entity ids as NULL."""
    odd = ['quote " and, comma', "line\nbreak", "naïve ✓", None]
    X = np.array([[0.1 + 0.2, -0.0], [1e-300, np.nan], [np.inf, 2.5], [-1.5e300, 7.0]])
    values = np.array([1 / 3, -2.2250738585072014e-308, 123456789.123456789, 0.0])
    stamp = 1_764_000_000.123456
    row_batch = replace(
        log_batch("exact", 4, role="shadow", entities=odd),
        ts=stamp,
        feature_names=("x y", 'q"uote'),
        features=X,
        predictions=values,
        model_name="démo",
        model_version="12",
    )
    with services.postgres_database() as url:
        engine = make_engine(url)
        ensure_schema(engine)
        assert shipper.store_segments(engine, [("run/seg", spool.to_table([row_batch]))]) == 4
        with engine.connect() as conn:
            rows = conn.execute(select(predictions).order_by(predictions.c.request_id)).all()
        engine.dispose()
    assert [r.request_id for r in rows] == [f"exact-{i}" for i in range(4)]
    assert [r.entity_id for r in rows] == odd
    assert [r.prediction for r in rows] == values.tolist()  # exact, not within a tolerance
    assert [r.features for r in rows] == [
        {"x y": 0.1 + 0.2, 'q"uote': -0.0},
        {"x y": 1e-300, 'q"uote': None},
        {"x y": None, 'q"uote': 2.5},
        {"x y": -1.5e300, 'q"uote': 7.0},
    ]
    assert {r.ts.timestamp() for r in rows} == {stamp}
    assert rows[0].ts.utcoffset().total_seconds() == 0 and rows[0].ts.microsecond == 123456
    assert {(r.model_name, r.model_version, r.role) for r in rows} == {("démo", "12", "shadow")}
    assert {(r.label, r.probabilities) for r in rows} == {(None, None)}


def test_submit_never_raises_even_when_not_started(tmp_path: Path):
    log = PredictionLog("sqlite://", tmp_path / "spool")
    assert log.submit(log_batch("x", 2))  # buffered; never raises


def test_the_spool_is_measured_while_another_server_renames_its_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Replicas sharing a spool volume: one starts (its run directory made under a dot name,
    then renamed into place) while another measures the spool. That walk failed the second
    replica's start ("No such file or directory: .../prediction-spool/.vm-...")."""
    root = tmp_path / "spool"
    (root / "run-a").mkdir(parents=True)
    (root / "run-a" / "seg-000000000001.arrow").write_bytes(b"x" * 100)
    making = root / ".run-b"
    making.mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == making:  # renamed by the other server just before it is read
            making.rename(root / "run-b")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert spool.spool_bytes(root) == 100


def test_a_flush_that_fails_unexpectedly_does_not_end_the_flushing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    writer = spool.SpoolWriter(tmp_path / "spool", max_bytes=2**30, flush_seconds=0.05)
    writer.open()
    failures = iter([OSError("the spool could not be measured")])
    real = spool.spool_bytes

    def measure_once_failing(root: Path) -> int:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real(root)

    monkeypatch.setattr(spool, "spool_bytes", measure_once_failing)
    try:
        # The first flush fails (after its writes, if it had any); the thread goes on.
        assert writer.submit(log_batch("first", 2))
        wait_for(lambda: len(spool.segments(writer.run_dir)) == 1)
        assert writer.submit(log_batch("second", 3))
        wait_for(lambda: len(spool.segments(writer.run_dir)) == 2)
    finally:
        writer.close()
        writer.release()
