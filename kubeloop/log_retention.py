"""Prediction log retention: rows older than the retention go, a day or a batch at a time.

Every answered row is logged (a busy server logs millions a day) and nothing else ever removes
them, so without retention the log's database grows until its disk is full. ``prune`` first
drops the day partitions of ``predictions`` wholly older than the cutoff (PostgreSQL,
``kubeloop.log_partitions``: a day's rows, indexes and space at once), then deletes the older
rows left (the cutoff's own day, the default partition, a log without partitions, the feedback),
oldest first, ``batch_rows`` at a time, each batch its own short transaction: the servers' COPY
and monitoring's reads are never held up for long, and a prune cut short (the job's deadline, a
restart) leaves a consistent log that the next run finishes. Feedback goes by its own arrival
time, which follows its prediction's, so no kept prediction loses its ground truth.
PostgreSQL's autovacuum makes the deleted rows' space reusable; SQLite reuses the freed pages.

The retention must cover what the platform reads back from the log: the monitoring window and
the retraining's labelled window (``check_retention``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from kubeloop.errors import SpecError
from kubeloop.log_partitions import days_before, drop_before
from kubeloop.log_store import feedback, predictions

if TYPE_CHECKING:
    from sqlalchemy import Column, Table
    from sqlalchemy.engine import Engine

    from kubeloop.spec import ProjectSpec

BATCH_ROWS = 50_000


@dataclass(frozen=True)
class Pruned:
    """Rows deleted (or, on a dry run, that would be) per table, and the day partitions
    dropped (or that would be), whose rows ``predictions`` counts."""

    predictions: int
    feedback: int
    partitions: int


def check_retention(keep_days: float, spec: ProjectSpec) -> None:
    """Refuse a retention shorter than a window the platform reads from the log."""
    needs = {"monitoring.window_hours": spec.monitoring.window_hours}
    if spec.retraining.labelled_hours is not None:
        needs["retraining.labelled_hours"] = spec.retraining.labelled_hours
    key, hours = max(needs.items(), key=lambda item: item[1])
    if keep_days * 24 < hours:
        raise SpecError(
            f"a retention of {keep_days:g} days would delete predictions that {key} "
            f"({hours:g} hours) still reads: keep at least {hours / 24:g} days",
            field=key,
        )


def cutoff(keep_days: float) -> datetime:
    """The oldest time kept: ``keep_days`` before now (UTC)."""
    return datetime.now(UTC) - timedelta(days=keep_days)


def every_few_seconds(
    report: Callable[[str, int], None], seconds: float = 10.0
) -> Callable[[str, int], None]:
    """``report`` at most every ``seconds``: a prune of a billion rows is 20,000 batches, and a
    line per batch would bury the job's log."""
    last = -float("inf")

    def throttled(table: str, rows: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= seconds:
            last = now
            report(table, rows)

    return throttled


def prune(
    engine: Engine,
    before: datetime,
    *,
    batch_rows: int = BATCH_ROWS,
    dry_run: bool = False,
    on_batch: Callable[[str, int], None] | None = None,
) -> Pruned:
    """Delete predictions and feedback whose ``ts`` is before ``before``.

    ``on_batch(table, rows so far)`` follows the progress (a dropped partition by its name).
    A log without tables (no server ever wrote to it) has nothing to prune. ``dry_run`` counts
    instead of deleting.
    """
    from sqlalchemy import inspect

    present = set(inspect(engine).get_table_names())
    counts, partitions = {}, 0
    for table, key in ((predictions, predictions.c.id), (feedback, feedback.c.request_id)):
        if table.name not in present:
            counts[table.name] = 0
        elif dry_run:
            counts[table.name] = _count_before(engine, table, before)
            if table is predictions:
                partitions = len(days_before(engine, before))
        else:
            dropped = 0
            if table is predictions:
                partitions, dropped = drop_before(engine, before, on_batch)
            rows = _delete_before(engine, table, key, before, batch_rows, on_batch, dropped)
            counts[table.name] = rows
    return Pruned(counts["predictions"], counts["feedback"], partitions)


def _count_before(engine: Engine, table: Table, before: datetime) -> int:
    from sqlalchemy import func, select

    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).where(table.c.ts < before)) or 0)


def _delete_before(
    engine: Engine,
    table: Table,
    key: Column,
    before: datetime,
    batch_rows: int,
    on_batch: Callable[[str, int], None] | None,
    deleted: int = 0,
) -> int:
    """Oldest first through the ``ts`` index, ``batch_rows`` keys per transaction. Each batch
    starts again at the oldest time, over the index entries of the rows deleted before it
    (kept until vacuum); PostgreSQL marks those dead on the first pass and skips them, and
    the batches took as long at the end of 5 million rows as at the start
    (``bench/log_prune.py``). Ranges that start after the last batch were tried: the planner
    then guesses the range's size and sorted the whole old part of the table instead.
    ``deleted``: rows already gone (dropped partitions), counted on from there."""
    from sqlalchemy import select

    oldest = select(key).where(table.c.ts < before).order_by(table.c.ts).limit(batch_rows)
    while True:
        with engine.begin() as conn:
            rows = conn.execute(table.delete().where(key.in_(oldest))).rowcount
        deleted += rows
        if on_batch is not None and rows:
            on_batch(table.name, deleted)
        if rows < batch_rows:
            return deleted
