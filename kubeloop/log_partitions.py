"""Daily partitions of the prediction log on PostgreSQL.

A busy server logs millions of rows a day, and the log keeps them for the retention (90 days by
default). In one table, retention deletes a day's rows one batch at a time (about 330,000 rows a
second here, ``bench/log_prune.py``) and leaves them to autovacuum, and the indexes span every
day kept. Partitioned by day on ``ts``, retention drops a whole day at once, its rows, indexes
and space, in milliseconds; each day's indexes stay small, and a read of a window (monitoring,
retraining) scans only the days it covers.

``predictions`` is partitioned by range of ``ts`` with one partition per UTC day,
``predictions_pYYYYMMDD``, and a default partition, ``predictions_default``, for rows of a day
that has none. The shipper makes sure the days of a batch have their partition before it
stores the batch (``Partitions.cover``), in a short transaction of its own, serialized between
replicas by an advisory lock, and creates the next ``AHEAD_DAYS`` days' too. Ahead, because
creating a partition takes an ACCESS EXCLUSIVE lock on ``predictions``: it waits for every read
in progress (a monitoring job can read for a minute), and while it waits every other reader and
writer queues behind it. So the creation gives up after ``LOCK_TIMEOUT`` and is tried again
``RETRY_SECONDS`` later, and the day that rows need at midnight was created days before, when
nothing held the table. A day that already has rows in the default partition (written by
another writer before its partition existed, or while its creation kept timing out) keeps going
there: PostgreSQL would refuse the new partition, and retention deletes those rows by batch like
any others. A log created before partitioning keeps its single table; everything here then does
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

PARENT = "predictions"
DEFAULT = "predictions_default"
PREFIX = "predictions_p"
# pg_advisory_xact_lock key serializing partition creation between replicas ("kubeloop").
LOCK_KEY = 0x6B7562656C6F6F70
AHEAD_DAYS = 2  # days after today whose partition a writer creates in advance
# How long creating or dropping a partition waits for the table (others queue behind it meanwhile).
LOCK_TIMEOUT = "2s"
RETRY_SECONDS = 300.0  # before a writer tries again after a creation gave up
# The most rows ``coverage`` counts in the default partition: a count of millions would hold the
# partition long enough to make a writer's partition creation time out (it scans the default).
DEFAULT_ROWS_COUNTED = 1_000_000


def partition_name(day: date) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


def day_of(name: str) -> date | None:
    """The day of a partition named by ``partition_name``; None for any other table."""
    if not name.startswith(PREFIX):
        return None
    try:
        return datetime.strptime(name[len(PREFIX) :], "%Y%m%d").date()
    except ValueError:
        return None


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


def is_partitioned(conn: Connection) -> bool:
    """Whether ``predictions`` is a partitioned table (PostgreSQL, created by this version)."""
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.exec_driver_sql(
        "SELECT relkind FROM pg_class WHERE oid = to_regclass(%(name)s)", {"name": PARENT}
    ).scalar()
    return kind == "p"


def existing_days(conn: Connection) -> set[date]:
    names = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%(name)s)",
        {"name": PARENT},
    ).scalars()
    return {day for name in names if (day := day_of(name)) is not None}


def create_days(engine: Engine, days: list[date]) -> set[date]:
    """Create the partitions of ``days`` that are missing; returns the days that have one now.
    A day with rows in the default partition gets none (see the module's docstring). Raises
    SQLAlchemy's ``OperationalError`` when a lock was not had within ``LOCK_TIMEOUT``
    (``lock_timed_out``): then nothing was created."""
    from sqlalchemy.exc import IntegrityError

    with engine.begin() as conn:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": LOCK_KEY})
        have = existing_days(conn)
        for day in sorted(set(days) - have):
            start, end = day_start(day), day_start(day + timedelta(days=1))
            try:
                with conn.begin_nested():
                    conn.exec_driver_sql(  # DDL takes no parameters; the bounds are dates
                        f"CREATE TABLE {partition_name(day)} PARTITION OF {PARENT} "
                        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
            except IntegrityError as exc:  # PostgreSQL found rows of that day in the default
                log.warning("rows of %s stay in the default partition: %s", day, exc.orig)
                continue
            have.add(day)
    return have


def lock_timed_out(exc: BaseException) -> bool:
    """Whether PostgreSQL gave up waiting for a lock (SQLSTATE 55P03, ``lock_timeout``)."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) == "55P03"


class Partitions:
    """The days one writer has settled: ``cover`` asks the database only about days it has not
    seen yet (a shipper's batches are mostly of today). A day left to the default partition is
    settled too: asking again would find the same rows there."""

    def __init__(self, engine: Engine, retry_seconds: float = RETRY_SECONDS):
        self.engine = engine
        self.retry_seconds = retry_seconds
        self._partitioned: bool | None = None
        self._days: set[date] = set()
        self._retry_at = 0.0

    def cover(self, days: set[date]) -> None:
        """Make sure ``days`` (UTC) and the next ``AHEAD_DAYS`` have their partition (where
        they can). When the table stays locked, ``days`` go to the default partition rather
        than wait, and the creation is tried again after ``retry_seconds``."""
        if self._partitioned is None:
            with self.engine.connect() as conn:
                self._partitioned = is_partitioned(conn)
        if not self._partitioned:
            return
        wanted = set(days)
        if monotonic() >= self._retry_at:
            today = datetime.now(UTC).date()
            wanted.update(today + timedelta(days=i) for i in range(AHEAD_DAYS + 1))
        missing = sorted(wanted - self._days)
        if not missing:
            return
        try:
            create_days(self.engine, missing)
        except Exception as exc:
            if not lock_timed_out(exc):
                raise
            log.warning(
                "partitions for %s not created: the prediction log stayed locked for %s (%s); "
                "rows of a day without one go to the default partition, retrying in %.0f s",
                ", ".join(map(str, missing)),
                LOCK_TIMEOUT,
                exc.orig,  # type: ignore[attr-defined]
                self.retry_seconds,
            )
            self._days.update(days)
            self._retry_at = monotonic() + self.retry_seconds
            return
        self._days.update(missing)

    def stop(self) -> None:
        """Create no more partitions in this process (creating them failed: rows then go to
        the default partition, and the log says why once)."""
        self._partitioned = False


def days_before(engine: Engine, before: datetime) -> list[date]:
    """The days whose partition lies wholly before ``before`` (none on a log without them)."""
    with engine.connect() as conn:
        if not is_partitioned(conn):
            return []
        return sorted(d for d in existing_days(conn) if day_start(d + timedelta(days=1)) <= before)


@dataclass(frozen=True)
class Coverage:
    """How far the day partitions reach, and how many rows missed them."""

    days_ahead: int  # consecutive days from today (UTC) with a partition, today included
    default_rows: int  # rows in the default partition, at most DEFAULT_ROWS_COUNTED


def coverage(engine: Engine, today: date | None = None) -> Coverage | None:
    """What monitoring reports of the partitions (``kubeloop_prediction_log_*``): rows in the
    default partition mean a day's partition could not be made in time, and retention then
    deletes that day row by row and every read of a window scans the default too. None on a
    log without partitions."""
    today = today or datetime.now(UTC).date()
    with engine.connect() as conn:
        if not is_partitioned(conn):
            return None
        days = existing_days(conn)
        default_rows = conn.exec_driver_sql(
            f"SELECT count(*) FROM (SELECT 1 FROM {DEFAULT} LIMIT {DEFAULT_ROWS_COUNTED}) AS r"
        ).scalar()
    ahead = 0
    while today + timedelta(days=ahead) in days:
        ahead += 1
    return Coverage(ahead, int(default_rows or 0))


def drop_before(
    engine: Engine, before: datetime, on_drop: Callable[[str, int], None] | None = None
) -> tuple[int, int]:
    """Drop the day partitions wholly before ``before``; returns (partitions, rows) dropped.
    A partition that cannot be locked within ``LOCK_TIMEOUT`` (a long read holds the table)
    stays, and its rows go by the batched delete instead."""
    from sqlalchemy.exc import DBAPIError

    dropped = rows = 0
    for day in days_before(engine, before):
        name = partition_name(day)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                count = int(conn.exec_driver_sql(f"SELECT count(*) FROM {name}").scalar() or 0)
                conn.exec_driver_sql(f"DROP TABLE {name}")
        except DBAPIError as exc:
            log.warning("partition %s stays (%s); its rows are deleted by batch", name, exc.orig)
            continue
        dropped, rows = dropped + 1, rows + count
        if on_drop is not None:
            on_drop(name, rows)
    return dropped, rows
