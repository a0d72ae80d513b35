"""The prediction log's shipper: spooled segments into the database, in bulk, exactly once.

It runs in its own process (started by ``serving.prediction_log.PredictionLog``), niced, so
turning segments into rows never takes the GIL or a core from the event loop. Each step reads
segments (oldest first) until ``batch_rows`` rows, turns them into the ``predictions`` columns
with Arrow compute (request ids, the features as a JSON object, timestamps: no Python per row
for PostgreSQL), ``STORE_CHUNK_ROWS`` at a time so that a big segment's text never sits in
memory whole, and stores them in one transaction together with the segments' names in
``log_segments``: PostgreSQL through ``COPY ... FROM STDIN (FORMAT binary)`` (psycopg 3; the
rows encoded from Arrow by pgpq) into the partition of their day (``kubeloop.log_partitions``,
created first where missing), SQLite through ``executemany``. Only then are the files
deleted; a segment found in ``log_segments`` (stored, then the process died before deleting it)
is skipped, so no row is stored twice.

Binary rather than CSV: numbers and timestamps travel as PostgreSQL stores them, so neither
side formats or parses them as text. A row took 5.6 µs to store against 8.7, of which
PostgreSQL's CPU 3.8 against 5.5 (``bench/log_ship.py``); one server's log is one COPY stream,
so that cost bounds how many rows a pod can log for good.

While the database is unreachable the segments wait (the spool grows) and the shipper retries
with back-off, forever; a segment the database refuses for its content is moved to
``rejected/`` and its rows counted. When its own run has nothing left, the shipper adopts the
directory of a dead run (its lock is free), ships it and counts the rows that run accepted but
never spooled (the last flush interval before a SIGKILL).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from kubeloop.log_partitions import Partitions
from kubeloop.log_store import PREDICTION_COLUMNS, ensure_schema, log_segments, make_engine
from serving import spool

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

# Slots of the counters shared with the server process.
WRITTEN, OWN_DONE, REJECTED, LOST, FAILED_ATTEMPTS = range(5)
SLOTS = 5
KEEP_SEGMENT_NAMES = timedelta(days=3)  # longer than any spool can wait
# Rows turned into text and sent per COPY, inside the one transaction: a segment holds what the
# server answered in one flush interval (70,000 rows at 2,800 req/s of 100 rows), and its text
# at once took the shipper from 115 to 300 MB.
STORE_CHUNK_ROWS = 10_000


def json_objects(column: pa.ChunkedArray, names: list[str]) -> pa.Array:
    """A fixed-size list column as one JSON object per row, ``{name: value}``, built with
    Arrow compute (non-finite values as null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(column)
    flat = column.combine_chunks().flatten().to_numpy()
    X = flat.reshape(n, len(names))
    parts: list[Any] = []
    for j, name in enumerate(names):
        values = pa.array(X[:, j])
        number = pc.if_else(pc.is_finite(values), pc.cast(values, pa.string()), "null")
        parts += [("{" if j == 0 else ",") + orjson.dumps(name).decode() + ":", number]
    parts.append("}")
    return pc.binary_join_element_wise(*parts, pa.scalar(""))


def store_table(segment: pa.Table) -> pa.Table:
    """A segment as ``predictions`` columns (strings where the database parses them); a
    regressor's rows have no ``label`` or ``probabilities`` (null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    classes = spool.class_names(segment)
    if classes is None:
        label = probabilities = pa.nulls(segment.num_rows, pa.string())
    else:
        label = segment["label"]
        probabilities = json_objects(segment["probabilities"], classes)

    def text(name: str) -> pa.ChunkedArray:
        return pc.cast(segment[name], pa.string())

    return pa.table(
        {
            "request_id": pc.binary_join_element_wise(
                text("base_id"), text("position"), pa.scalar("-")
            ),
            "ts": segment["ts"],
            "entity_id": segment["entity_id"],
            "features": json_objects(segment["features"], spool.feature_names(segment)),
            "prediction": segment["prediction"],
            "model_name": text("model_name"),
            "model_version": text("model_version"),
            "model_label": text("model_label"),
            "role": text("role"),
            "label": label,
            "probabilities": probabilities,
        }
    )


def binary_copy(table: pa.Table) -> Iterator[bytes]:
    """``table`` in PostgreSQL's binary COPY format, columns in its order, a record batch at a
    time. The JSON columns go as text, which is also the binary form of ``json``; the
    timestamps as microseconds (UTC)."""
    import pgpq

    encoder = pgpq.ArrowToPostgresBinaryEncoder(table.schema)
    yield encoder.write_header()
    for batch in table.to_batches():
        yield encoder.write_batch(batch)
    yield encoder.finish()


def insert_rows(conn, table: pa.Table) -> None:
    """Store ``predictions`` rows on the connection's open transaction."""
    import pyarrow.compute as pc

    columns = ", ".join(PREDICTION_COLUMNS)
    if conn.dialect.name == "postgresql":
        with (
            conn.connection.driver_connection.cursor() as cursor,
            cursor.copy(f"COPY predictions ({columns}) FROM STDIN WITH (FORMAT binary)") as copy,
        ):
            for part in binary_copy(table):
                copy.write(part)
        return
    # SQLite stores DateTime as SQLAlchemy formats it; Arrow's %S carries the microseconds.
    stamps = pc.strftime(table["ts"], format="%Y-%m-%d %H:%M:%S").to_pylist()
    values = [table[c].to_pylist() if c != "ts" else stamps for c in PREDICTION_COLUMNS]
    marks = ", ".join("?" * len(PREDICTION_COLUMNS))
    conn.exec_driver_sql(
        f"INSERT INTO predictions ({columns}) VALUES ({marks})", list(zip(*values, strict=True))
    )


def store_segments(
    engine, named: list[tuple[str, pa.Table]], partitions: Partitions | None = None
) -> int:
    """Store the segments not stored yet, with their names, in one transaction; returns rows.
    ``partitions`` first gives the days of their rows a partition of their own."""
    from sqlalchemy import select

    if partitions is not None:
        try:
            partitions.cover(days_of([table for _, table in named]))
        except Exception as exc:
            if is_unreachable(exc):
                raise
            log.warning("no day partitions (%s): rows go to the default partition", exc)
            partitions.stop()
    with engine.begin() as conn:
        names = [name for name, _ in named]
        done = set(conn.scalars(select(log_segments.c.name).where(log_segments.c.name.in_(names))))
        todo = [(name, table) for name, table in named if name not in done]
        if not todo:
            return 0
        for _, segment in todo:  # each with its own features and classes (schema metadata)
            for offset in range(0, segment.num_rows, STORE_CHUNK_ROWS):
                insert_rows(conn, store_table(segment.slice(offset, STORE_CHUNK_ROWS)))
        now = datetime.now(UTC)
        conn.execute(
            log_segments.insert(),
            [{"name": name, "rows": t.num_rows, "shipped_at": now} for name, t in todo],
        )
    return sum(t.num_rows for _, t in todo)


def days_of(tables: list[pa.Table]) -> set[date]:
    """The UTC days of the segments' rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return {
        day for table in tables for day in pc.unique(pc.cast(table["ts"], pa.date32())).to_pylist()
    }


def is_unreachable(exc: BaseException) -> bool:
    """A connection problem (retry the same rows later), not a refusal of their content."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError | OSError):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated)
    try:
        import psycopg
    except ImportError:  # pragma: no cover - SQLite only
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


class Shipper:
    """Ships one spool; ``step`` does one transaction's worth of work."""

    def __init__(self, engine, root: Path, own_run: Path, counters, batch_rows: int):
        self.engine = engine
        self.root = root
        self.own_run = own_run
        self.counters = counters
        self.batch_rows = batch_rows
        self.adopted: dict[Path, int] = {}  # run dir -> lock descriptor
        self._schema_ready = False
        self._pruned = 0.0
        self.partitions = Partitions(engine)

    def add(self, slot: int, n: int) -> None:
        with self.counters.get_lock():
            self.counters[slot] += n

    def next_run(self, own_only: bool) -> Path | None:
        """Where the next segments come from: this run first, then an adopted dead run."""
        if spool.segments(self.own_run) or own_only:
            return self.own_run
        for run_dir in spool.run_dirs(self.root):
            if run_dir == self.own_run:
                continue
            if run_dir not in self.adopted:
                fd = spool.try_lock(run_dir)
                if fd is None:
                    continue
                log.info("adopting the prediction log spool of a stopped server: %s", run_dir)
                self.adopted[run_dir] = fd
            if spool.segments(run_dir):
                return run_dir
            self._finish_adopted(run_dir)
        return None

    def _finish_adopted(self, run_dir: Path) -> None:
        counts = spool.read_counters(run_dir)
        lost = int(
            counts[spool.ACCEPTED]
            - counts[spool.SPOOLED]
            - counts[spool.FULL]
            - counts[spool.FAILED]
        )
        if lost > 0:
            log.error(
                "%d prediction rows of %s were accepted but never spooled (killed server)",
                lost,
                run_dir.name,
            )
            self.add(LOST, lost)
        spool.remove_run(run_dir, self.adopted.pop(run_dir))

    def step(self, own_only: bool = False) -> int:
        """Ship up to ``batch_rows`` rows; returns how many (0: nothing to ship)."""
        if not self._schema_ready:
            ensure_schema(self.engine)
            self._schema_ready = True
        self._prune()
        run_dir = self.next_run(own_only)
        if run_dir is None:
            return 0
        named, rows, paths = [], 0, []
        for path in spool.segments(run_dir):
            table = spool.read_segment(path)
            named.append((f"{run_dir.name}/{path.name}", table))
            paths.append(path)
            rows += table.num_rows
            if rows >= self.batch_rows:
                break
        if not named:
            return 0
        try:
            self.add(WRITTEN, store_segments(self.engine, named, self.partitions))
        except Exception as exc:
            if is_unreachable(exc) or len(named) > 1:
                raise  # retried later (several segments: one at a time, to find the bad one)
            self._reject(paths[0], exc)
        else:
            for path in paths:
                path.unlink(missing_ok=True)
        if run_dir == self.own_run:
            self.add(OWN_DONE, rows)
        return rows

    def step_one_by_one(self) -> None:
        """After a refusal of several segments: ship them singly, rejecting the bad ones."""
        saved, self.batch_rows = self.batch_rows, 1
        try:
            self.step()
        finally:
            self.batch_rows = saved

    def _reject(self, path: Path, exc: BaseException) -> None:
        rows = spool.read_segment(path).num_rows
        log.error("the database refused spooled segment %s (%d rows): %s", path, rows, exc)
        (path.parent / spool.REJECTED).mkdir(exist_ok=True)
        path.rename(path.parent / spool.REJECTED / path.name)
        self.add(REJECTED, rows)

    def _prune(self) -> None:
        """Forget segment names older than any spool can hold, once an hour."""
        if time.monotonic() - self._pruned < 3600:
            return
        self._pruned = time.monotonic()
        with self.engine.begin() as conn:
            conn.execute(
                log_segments.delete().where(
                    log_segments.c.shipped_at < datetime.now(UTC) - KEEP_SEGMENT_NAMES
                )
            )

    def release(self) -> None:
        for fd in self.adopted.values():
            os.close(fd)
        self.adopted.clear()


def ship_main(
    url: str,
    root: str,
    own_run: str,
    counters,
    stop,
    batch_rows: int,
    drain_seconds: float,
    idle_seconds: float,
    parent_pid: int,
    nice: int = 0,
) -> None:
    """The shipper process: ship until ``stop`` is set, then drain this run's segments for at
    most ``drain_seconds``. It ignores SIGINT and SIGTERM (an init that signals the whole group
    must not cut the drain short) and exits when the server dies (the next server adopts)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if nice:
        os.nice(nice)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s prediction-log-shipper: %(message)s"
    )
    engine = make_engine(url)
    shipper = Shipper(engine, Path(root), Path(own_run), counters, batch_rows)
    backoff = 0.0
    deadline: float | None = None
    while os.getppid() == parent_pid:
        if deadline is None and stop.is_set():
            deadline = time.monotonic() + drain_seconds
        if deadline is not None and time.monotonic() > deadline:
            log.warning("drain time over: segments left on the spool for the next server")
            break
        try:
            shipped = shipper.step(own_only=deadline is not None)
        except Exception as exc:  # noqa: BLE001 - retried: the rows are safe on disk
            shipper.add(FAILED_ATTEMPTS, 1)
            backoff = min(5.0, max(0.1, backoff * 2))
            log.warning("prediction log not stored yet (retrying in %.1fs): %s", backoff, exc)
            engine.dispose()
            if not is_unreachable(exc):
                with contextlib.suppress(Exception):  # unreachable after all: wait and retry
                    shipper.step_one_by_one()
            if deadline is None:
                stop.wait(backoff)
            else:
                time.sleep(min(backoff, 0.5))
            continue
        backoff = 0.0
        if shipped == 0:
            if deadline is not None:
                break  # drained
            stop.wait(idle_seconds)
    shipper.release()
    engine.dispose()


def pending_rows(counters, accepted: np.ndarray) -> int:
    """Rows this server accepted that are neither stored, refused nor counted as dropped."""
    own = counters[OWN_DONE]
    return int(accepted[spool.ACCEPTED] - accepted[spool.FULL] - accepted[spool.FAILED] - own)
