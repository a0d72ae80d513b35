"""The prediction log writer: every prediction, written in the background, in batches.

The request path only hands a compact batch (ids, the feature matrix, the predictions, the
model) to ``PredictionLog.submit``, which never blocks and never raises: when more rows wait
than ``log_queue_rows`` allows, the batch is dropped and counted. A separate *writer process*
turns batches into rows and inserts them through SQLAlchemy (schema: ``kubeloop.log_store``),
retrying failed writes with tenacity for ``log_retry_seconds`` before counting the rows as
dropped. A process rather than a thread, because building and inserting rows costs ~10 µs per
row of CPU: in a thread it would take the GIL from the event loop exactly when traffic is
heaviest; in its own process it uses another core, and the server's latency does not depend on
how fast the database is.

Feedback (ground truth) is written synchronously with ``write_feedback``: it is rare, and the
caller must know whether it was stored.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from kubeloop.log_store import ensure_schema, make_engine

log = logging.getLogger(__name__)

# Shared counters the writer process updates and the server exports as metrics.
_COMPLETED, _WRITTEN, _DROPPED, _FAILED_ATTEMPTS = range(4)


@dataclass(frozen=True)
class LogBatch:
    """Predictions of one model for (part of) one request, as the writer process receives them.

    ``positions`` are the record indices inside the request (request id ``<base>-<position>``);
    None means ``range(len(predictions))``.
    """

    base_id: str
    ts: float
    positions: Sequence[int] | None
    entity_ids: Sequence[str | None] | None
    feature_names: tuple[str, ...]
    features: np.ndarray
    predictions: np.ndarray
    model_name: str
    model_version: str
    model_label: str
    role: str

    def __len__(self) -> int:
        return len(self.predictions)

    def rows(self) -> list[dict[str, Any]]:
        """The batch as ``predictions`` table rows."""
        ts = datetime.fromtimestamp(self.ts, UTC)
        positions = self.positions if self.positions is not None else range(len(self.predictions))
        entities = self.entity_ids if self.entity_ids is not None else [None] * len(positions)
        names = self.feature_names
        return [
            {
                "request_id": f"{self.base_id}-{pos}",
                "ts": ts,
                "entity_id": entity,
                "features": dict(zip(names, row, strict=True)),
                "prediction": value,
                "model_name": self.model_name,
                "model_version": self.model_version,
                "model_label": self.model_label,
                "role": self.role,
            }
            for pos, entity, row, value in zip(
                positions, entities, self.features.tolist(), self.predictions.tolist(), strict=True
            )
        ]


def write_rows(engine, rows: list[dict[str, Any]]) -> None:
    """Insert prediction rows in one transaction."""
    from kubeloop.log_store import predictions

    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows)


def write_feedback(engine, items: Sequence[tuple[str, float]]) -> None:
    """Store ground truth per request id; a second value for the same id replaces the first."""
    from kubeloop.log_store import feedback

    now = datetime.now(UTC)
    rows = [{"request_id": rid, "ts": now, "actual": actual} for rid, actual in items]
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(feedback)
    statement = statement.on_conflict_do_update(
        index_elements=[feedback.c.request_id],
        set_={"ts": statement.excluded.ts, "actual": statement.excluded.actual},
    )
    with engine.begin() as conn:
        conn.execute(statement, rows)


def _writer_main(
    url: str,
    batches,
    counters,
    batch_rows: int,
    flush_seconds: float,
    retry_seconds: float,
    parent_pid: int,
    nice: int = 0,
) -> None:
    """The writer process: gather batches into ``batch_rows`` rows, insert, retry, count.

    It ignores SIGINT and SIGTERM: an init that signals the whole process group (Ctrl-C,
    dumb-init) must not kill it before the server has handed over its last rows; the server
    stops it with a sentinel, and it exits by itself if the server dies."""
    import signal

    from tenacity import Retrying, stop_after_delay, wait_exponential

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if nice:
        os.nice(nice)  # when CPU is short, predictions go first; the log drops (and counts)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s prediction-log-writer: %(message)s"
    )
    engine = make_engine(url)
    schema_ready = False
    try:  # tables exist from the start, so readers (monitoring) find them even when empty
        ensure_schema(engine)
        schema_ready = True
    except Exception as exc:  # noqa: BLE001 - the first write retries it
        log.warning("prediction log database not reachable yet: %s", exc)

    def add(index: int, n: int) -> None:
        with counters.get_lock():
            counters[index] += n

    def attempt_failed(state) -> None:
        add(_FAILED_ATTEMPTS, 1)
        log.warning(
            "prediction log write failed (attempt %d, retrying): %s",
            state.attempt_number,
            state.outcome.exception(),
        )

    def write(rows: list[dict[str, Any]]) -> None:
        nonlocal schema_ready
        if not schema_ready:
            ensure_schema(engine)
            schema_ready = True
        write_rows(engine, rows)

    def flush(rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            for attempt in Retrying(
                stop=stop_after_delay(retry_seconds),
                wait=wait_exponential(multiplier=0.05, max=1.0),
                after=attempt_failed,
                reraise=True,
            ):
                with attempt:
                    write(rows)
        except Exception as exc:  # noqa: BLE001 - the rows are counted, the writer lives on
            log.error(
                "dropping %d prediction rows after retrying for %.0fs: %s",
                len(rows),
                retry_seconds,
                exc,
            )
            engine.dispose()
            add(_DROPPED, len(rows))
        else:
            add(_WRITTEN, len(rows))
        add(_COMPLETED, len(rows))

    pending: list[dict[str, Any]] = []
    deadline = time.monotonic() + flush_seconds
    done = False
    while not done:
        try:
            item = batches.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            item = ...
        if os.getppid() != parent_pid:  # the server died without closing us
            done = True
        if item is None:
            done = True
        elif item is not ...:
            for batch in item:
                pending.extend(batch.rows())
        if done or len(pending) >= batch_rows or time.monotonic() >= deadline:
            for start in range(0, len(pending), batch_rows):
                flush(pending[start : start + batch_rows])
            pending = []
            deadline = time.monotonic() + flush_seconds
    engine.dispose()


class PredictionLog:
    """The server side of the log: a bounded, non-blocking hand-off to the writer process.

    ``on_counts(written, dropped, failed_attempts, queued)`` receives deltas (and the current
    queue depth) about twice a second, so the metrics follow the writer.
    """

    def __init__(
        self,
        url: str,
        *,
        queue_rows: int = 100_000,
        batch_rows: int = 500,
        flush_seconds: float = 0.25,
        retry_seconds: float = 10.0,
        handoff_seconds: float = 0.01,
        nice: int = 19,
        on_counts: Callable[[int, dict[str, int], int, int], None] | None = None,
    ):
        self.url = url
        self.queue_rows = queue_rows
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.retry_seconds = retry_seconds
        self._on_counts = on_counts
        self.handoff_seconds = handoff_seconds
        self.nice = nice
        # Batches wait here (on the event loop) for up to handoff_seconds, then go to the writer
        # in one put: one wake-up of the queue's feeder thread per hand-off, not per request.
        self._buffer: list[LogBatch] = []
        self._buffered = 0
        self._handoff_scheduled = False
        self._buffer_lock = threading.Lock()
        self._ctx = mp.get_context("spawn")
        self._counters = self._ctx.Array("q", 4)
        self._queue = None
        self._process = None
        self._submitted = 0
        self._lost = 0  # rows handed to a writer that died
        self._dropped_full = 0
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._spawn()
        self._monitor = threading.Thread(
            target=self._watch, name="prediction-log-monitor", daemon=True
        )
        self._monitor.start()

    def _spawn(self) -> None:
        self._queue = self._ctx.Queue()
        self._process = self._ctx.Process(
            target=_writer_main,
            name="kubeloop-prediction-log",
            args=(
                self.url,
                self._queue,
                self._counters,
                self.batch_rows,
                self.flush_seconds,
                self.retry_seconds,
                os.getpid(),
                self.nice,
            ),
            daemon=True,
        )
        self._process.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.flush()  # safety net for batches submitted outside an event loop
            process = self._process
            if process is not None and not process.is_alive():
                with self._lock:
                    lost = self.pending
                    log.error(
                        "prediction log writer exited (code %s); %d queued rows lost, "
                        "restarting it",
                        process.exitcode,
                        lost,
                    )
                    self._lost += lost
                    self._spawn()
            self.report()

    def close(self, timeout: float = 15.0) -> None:
        """Flush what is queued (waiting at most ``timeout``) and stop the writer."""
        self.flush()
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=2)
        process, batches = self._process, self._queue
        if process is None or batches is None:
            return
        batches.put(None)
        process.join(timeout=timeout)
        if process.is_alive():
            log.error("prediction log writer did not finish in %.0fs; stopping it", timeout)
            process.kill()  # it ignores SIGTERM by design
            process.join(timeout=2)
        with self._lock:
            self._lost += self.pending
        self.report()
        batches.close()
        if process.exitcode == 0:
            batches.join_thread()
        else:
            batches.cancel_join_thread()
        self._process = None

    # -- hot path ------------------------------------------------------------------------------
    def submit(self, batch: LogBatch) -> bool:
        """Queue a batch for writing; False (and counted) when the queue is full. Never raises."""
        n = len(batch)
        if self._queue is None or self.pending + n > self.queue_rows:
            self._dropped_full += n
            return False
        with self._buffer_lock:
            self._buffer.append(batch)
            self._buffered += n
            full = self._buffered >= self.batch_rows
        self._submitted += n
        if full:
            self.flush()
        elif not self._handoff_scheduled:
            self._handoff_scheduled = True
            try:
                asyncio.get_running_loop().call_later(self.handoff_seconds, self.flush)
            except RuntimeError:  # not on an event loop: hand over at once
                self.flush()
        return True

    def flush(self) -> None:
        """Hand the buffered batches to the writer process now."""
        with self._buffer_lock:
            self._handoff_scheduled = False
            items, self._buffer, self._buffered = self._buffer, [], 0
        if not items:
            return
        try:
            self._queue.put_nowait(items)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - the log must never fail a prediction
            with self._lock:
                self._lost += sum(len(b) for b in items)

    @property
    def pending(self) -> int:
        """Rows handed over and not yet written or dropped by the writer."""
        return self._submitted - self._lost - self._counters[_COMPLETED]

    def counts(self) -> dict[str, int]:
        """Totals since start: written, dropped by reason, failed write attempts, queued."""
        return {
            "written": self._counters[_WRITTEN],
            "dropped_write_error": self._counters[_DROPPED],
            "dropped_queue_full": self._dropped_full,
            "dropped_writer_lost": self._lost,
            "failed_attempts": self._counters[_FAILED_ATTEMPTS],
            "queued": self.pending,
        }

    def report(self) -> None:
        """Send count deltas since the last report to ``on_counts``."""
        if self._on_counts is None:
            return
        with self._lock:
            now = {
                "written": self._counters[_WRITTEN],
                "write_error": self._counters[_DROPPED],
                "failed": self._counters[_FAILED_ATTEMPTS],
                "queue_full": self._dropped_full,
                "writer_lost": self._lost,
            }
            delta = {k: v - self._seen.get(k, 0) for k, v in now.items()}
            self._seen = now
        dropped = {k: delta[k] for k in ("write_error", "queue_full", "writer_lost")}
        self._on_counts(delta["written"], dropped, delta["failed"], max(0, self.pending))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued row is written or dropped (tests, shutdown)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.pending <= 0:
                self.report()
                return True
            time.sleep(0.02)
        return False
