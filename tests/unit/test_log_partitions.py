"""The prediction log partitioned by day on PostgreSQL: rows reach their day's partition,
retention drops whole days, and writers never fail for want of a partition."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import MetaData, select

from kubeloop import log_partitions
from kubeloop.log_partitions import DEFAULT, Partitions, existing_days, partition_name
from kubeloop.log_retention import cutoff, prune
from kubeloop.log_store import ensure_schema, make_engine, predictions
from serving import shipper, spool
from serving.prediction_log import LogBatch
from tests.utils import services
from tests.utils.serving import log_batch

DAY = 86_400.0


def logged(base: str, n: int, age_days: float) -> LogBatch:
    return replace(log_batch(base, n), ts=time.time() - age_days * DAY)


def day_ago(days: float) -> date:
    return (datetime.now(UTC) - timedelta(days=days)).date()


def ahead() -> set[date]:
    """The days after today a writer creates in advance."""
    return {day_ago(-d) for d in range(1, log_partitions.AHEAD_DAYS + 1)}


@pytest.fixture
def engine() -> Iterator:
    with services.postgres_database() as url:
        engine = make_engine(url)
        try:
            ensure_schema(engine)
            yield engine
        finally:
            engine.dispose()


def rows_in(engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar())


def test_shipped_rows_reach_their_days_partition_and_retention_drops_whole_days(engine):
    segment = spool.to_table([logged("old", 7, 40), logged("mid", 4, 10), logged("new", 2, 0)])
    assert shipper.store_segments(engine, [("run/seg", segment)], Partitions(engine)) == 13

    with engine.connect() as conn:
        assert existing_days(conn) == {day_ago(40), day_ago(10), day_ago(0)} | ahead()
    assert [rows_in(engine, partition_name(day_ago(d))) for d in (40, 10, 0)] == [7, 4, 2]
    assert rows_in(engine, DEFAULT) == 0

    dry = prune(engine, cutoff(30), dry_run=True)
    assert (dry.predictions, dry.partitions) == (7, 1)
    assert rows_in(engine, partition_name(day_ago(40))) == 7  # a dry run drops nothing

    progress: list[tuple[str, int]] = []
    pruned = prune(engine, cutoff(30), on_batch=lambda t, n: progress.append((t, n)))
    assert (pruned.predictions, pruned.partitions) == (7, 1)
    assert progress == [(partition_name(day_ago(40)), 7)]  # nothing left to delete by batch
    with engine.connect() as conn:
        assert existing_days(conn) == {day_ago(10), day_ago(0)} | ahead()
        kept = sorted(conn.scalars(select(predictions.c.request_id)))
    assert kept == sorted([f"mid-{i}" for i in range(4)] + ["new-0", "new-1"])


def test_retention_drops_the_days_before_the_cutoff_and_deletes_within_its_day(engine):
    """A cutoff at noon: the day before goes whole, the morning's rows by batch."""
    first = log_partitions.day_start(day_ago(5))
    hours = [first + timedelta(hours=h, minutes=30) for h in range(48)]  # two whole days
    batches = [replace(log_batch(f"h{i}", 1), ts=t.timestamp()) for i, t in enumerate(hours)]
    segment = spool.to_table(batches)
    assert shipper.store_segments(engine, [("run/seg", segment)], Partitions(engine)) == 48

    pruned = prune(engine, first + timedelta(hours=36), batch_rows=5)

    assert (pruned.predictions, pruned.partitions) == (24 + 12, 1)
    with engine.connect() as conn:
        assert existing_days(conn) == {day_ago(4), day_ago(0)} | ahead()
        kept = sorted(conn.scalars(select(predictions.c.ts)))
    assert kept == hours[36:]


def test_a_day_whose_rows_already_went_to_the_default_partition_keeps_going_there(engine):
    """Another writer stored rows of a day before it had a partition: PostgreSQL would refuse
    that day's partition, so the shipper stores the day in the default too, and retention
    deletes it by batch."""
    early = spool.to_table([logged("early", 3, 5)])
    assert shipper.store_segments(engine, [("other/seg", early)]) == 3  # no partitions asked
    assert rows_in(engine, DEFAULT) == 3

    later = spool.to_table([logged("later", 2, 5), logged("today", 2, 0)])
    assert shipper.store_segments(engine, [("run/seg", later)], Partitions(engine)) == 4
    with engine.connect() as conn:
        assert existing_days(conn) == {day_ago(0)} | ahead()
    assert rows_in(engine, DEFAULT) == 5

    pruned = prune(engine, cutoff(3))
    assert (pruned.predictions, pruned.partitions) == (5, 0)
    assert rows_in(engine, DEFAULT) == 0 and rows_in(engine, partition_name(day_ago(0))) == 2


@contextlib.contextmanager
def long_read(engine) -> Iterator[None]:
    """A monitoring job's read in progress, holding ``predictions`` (for at most 20 s: without
    the lock timeout the code under test waits that long, and the test fails on time)."""
    reading, done = threading.Event(), threading.Event()

    def read() -> None:
        with engine.connect() as reader:
            reader.exec_driver_sql("SELECT count(*) FROM predictions")
            reading.set()
            done.wait(20)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        assert reading.wait(10)
        yield
    finally:
        done.set()
        thread.join()


def test_a_partition_a_long_read_holds_is_left_to_the_batched_delete(engine):
    segment = spool.to_table([logged("old", 7, 40), logged("new", 2, 0)])
    assert shipper.store_segments(engine, [("run/seg", segment)], Partitions(engine)) == 9
    with long_read(engine):
        started = time.monotonic()
        pruned = prune(engine, cutoff(30))
        waited = time.monotonic() - started
    assert 1.5 < waited < 10, waited
    assert (pruned.predictions, pruned.partitions) == (7, 0)
    assert rows_in(engine, partition_name(day_ago(40))) == 0  # emptied by batch, dropped next time
    assert rows_in(engine, "predictions") == 2


def test_a_long_read_neither_holds_up_the_shipper_nor_is_held_up_behind_it(engine, caplog):
    """Creating a partition needs the whole table: behind a read in progress it gives up after
    LOCK_TIMEOUT (a reader arriving meanwhile waits no longer), the rows go to the default
    partition, and the days ahead are created once the read is over."""
    today = spool.to_table([logged("today", 3, 0)])
    partitions = Partitions(engine, retry_seconds=0.0)
    with long_read(engine):
        started = time.monotonic()
        assert shipper.store_segments(engine, [("run/seg1", today)], partitions) == 3
        waited = time.monotonic() - started
    assert 1.5 < waited < 10, waited  # LOCK_TIMEOUT is 2 s
    assert "stayed locked" in caplog.text
    assert rows_in(engine, DEFAULT) == 3
    with engine.connect() as conn:
        assert existing_days(conn) == set()

    later = spool.to_table([logged("later", 2, 0)])
    assert shipper.store_segments(engine, [("run/seg2", later)], partitions) == 2
    with engine.connect() as conn:
        assert existing_days(conn) == ahead()  # today's rows stay in the default
    assert rows_in(engine, DEFAULT) == 5


def test_a_log_created_before_partitioning_keeps_working_as_one_table():
    with services.postgres_database() as url:
        engine = make_engine(url)
        try:
            old = MetaData()
            predictions.to_metadata(old).create(engine)  # one table, as created before
            ensure_schema(engine)
            with engine.connect() as conn:
                assert not log_partitions.is_partitioned(conn)
            segment = spool.to_table([logged("old", 3, 40), logged("new", 2, 0)])
            assert shipper.store_segments(engine, [("run/seg", segment)], Partitions(engine)) == 5
            pruned = prune(engine, cutoff(30))
            assert (pruned.predictions, pruned.partitions) == (3, 0)
            assert rows_in(engine, "predictions") == 2
        finally:
            engine.dispose()


def test_replicas_creating_the_same_days_at_once_all_succeed(engine):
    """Several shippers (one per server replica) meet the same new day at the same moment."""
    days = [day_ago(d) for d in range(3)]
    engines = [make_engine(engine.url.render_as_string(hide_password=False)) for _ in range(4)]
    results: list[set[date]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def create(other) -> None:
        start.wait()
        try:
            results.append(log_partitions.create_days(other, days))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(e,)) for e in engines]
    with contextlib.ExitStack() as stack:
        for e in engines:
            stack.callback(e.dispose)
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    assert results == [set(days)] * len(engines)
    with engine.connect() as conn:
        assert existing_days(conn) == set(days)


def test_monitoring_reports_the_days_ahead_and_the_rows_that_missed_their_partition(engine):
    """What KubeloopPredictionLogDefaultPartitionRows reads (pushed by the monitoring job)."""
    from monitoring.job import log_samples

    def figures() -> dict[str, float]:
        return {s.name: s.value for s in log_samples(engine)}

    assert figures() == {
        "kubeloop_prediction_log_partition_days_ahead": 0,  # nothing shipped: none made yet
        "kubeloop_prediction_log_default_partition_rows": 0,
    }
    early = spool.to_table([logged("early", 3, 5)])
    assert shipper.store_segments(engine, [("other/seg", early)]) == 3  # no partitions asked
    today = spool.to_table([logged("today", 2, 0)])
    assert shipper.store_segments(engine, [("run/seg", today)], Partitions(engine)) == 2
    assert figures() == {
        "kubeloop_prediction_log_partition_days_ahead": 1 + log_partitions.AHEAD_DAYS,
        "kubeloop_prediction_log_default_partition_rows": 3,
    }
    found = log_partitions.coverage(engine, today=day_ago(-log_partitions.AHEAD_DAYS))
    assert found is not None and found.days_ahead == 1  # the last day made ahead, then none


def test_a_log_without_partitions_reports_none(tmp_path):
    from monitoring.job import log_samples

    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    ensure_schema(engine)
    assert log_partitions.coverage(engine) is None and log_samples(engine) == []
    engine.dispose()
    broken = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert log_samples(broken) == []  # never fails a monitoring run
