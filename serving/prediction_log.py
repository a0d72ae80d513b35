"""The prediction log: every prediction, on local disk first, then in the database in bulk.

The request path hands a compact batch (ids, the feature matrix, the predictions, the model) to
``PredictionLog.submit``, which never blocks and never raises. The batch goes to the spool
(``serving.spool``: Arrow IPC segments on the pod's volume, written by a thread every
``flush_seconds``); a *shipper process* (``serving.shipper``) stores the segments in the
database (schema: ``kubeloop.log_store``) and deletes them. Rows are dropped only when the spool
holds its disk budget (``spool_max_bytes``), and counted; a database outage only makes the
spool grow. A process for shipping, because building rows costs CPU: in a thread it would take
the GIL from the event loop exactly when traffic is heaviest.

Feedback (ground truth) is written synchronously with ``write_feedback``: it is rare, and the
caller must know whether it was stored.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from serving import shipper, spool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogBatch:
    """Predictions of one model for (part of) one request, as the spool receives them.

    ``positions`` are the record indices inside the request (request id ``<base>-<position>``);
    None means ``range(len(predictions))``. A classifier's ``predictions`` are its class
    probabilities ``(N, C)``, columns in ``classes`` order; a regressor's are ``(N,)`` values and
    ``classes`` is None.
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
    classes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.predictions)


def write_feedback(engine, items: Sequence[tuple[str, float | str]]) -> None:
    """Store ground truth per request id; a second value for the same id replaces the first.
    A number goes to ``actual`` (regression), a class label to ``actual_label``."""
    from kubeloop.log_store import feedback

    now = datetime.now(UTC)
    rows = [
        {
            "request_id": rid,
            "ts": now,
            "actual": None if isinstance(actual, str) else actual,
            "actual_label": actual if isinstance(actual, str) else None,
        }
        for rid, actual in items
    ]
    from sqlalchemy.dialects import postgresql, sqlite

    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = insert(feedback)
    statement = statement.on_conflict_do_update(
        index_elements=[feedback.c.request_id],
        set_={
            "ts": statement.excluded.ts,
            "actual": statement.excluded.actual,
            "actual_label": statement.excluded.actual_label,
        },
    )
    with engine.begin() as conn:
        conn.execute(statement, rows)


class PredictionLog:
    """The server side of the log: the spool writer, the shipper process, their counts.

    ``on_counts(written, dropped, failed_attempts, queued)`` receives deltas (and the rows not
    stored yet) about twice a second, so the metrics follow the shipper.
    """

    def __init__(
        self,
        url: str,
        spool_dir: Path,
        *,
        spool_max_bytes: int = 2 * 2**30,
        batch_rows: int = 50_000,
        flush_seconds: float = 0.25,
        drain_seconds: float = 15.0,
        nice: int = 19,
        on_counts: Callable[[int, dict[str, int], int, int], None] | None = None,
    ):
        self.url = url
        self.spool = spool.SpoolWriter(
            Path(spool_dir), max_bytes=spool_max_bytes, flush_seconds=flush_seconds
        )
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.drain_seconds = drain_seconds
        self.nice = nice
        self._on_counts = on_counts
        self._ctx = mp.get_context("spawn")
        self._counters = self._ctx.Array("q", shipper.SLOTS)
        self._stop_shipping = self._ctx.Event()
        self._process: Any = None
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open this run's spool directory and start the shipper (which also ships what a
        killed predecessor left on the same volume)."""
        self.spool.open()
        self._spawn()
        self._monitor = threading.Thread(
            target=self._watch, name="prediction-log-monitor", daemon=True
        )
        self._monitor.start()

    def _spawn(self) -> None:
        self._process = self._ctx.Process(
            target=shipper.ship_main,
            name="kubeloop-prediction-log",
            args=(
                self.url,
                str(self.spool.root),
                str(self.spool.run_dir),
                self._counters,
                self._stop_shipping,
                self.batch_rows,
                self.drain_seconds,
                self.flush_seconds,
                os.getpid(),
                self.nice,
            ),
            daemon=True,
        )
        self._process.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            process = self._process
            if process is not None and not process.is_alive() and not self._stop.is_set():
                log.error(
                    "prediction log shipper exited (code %s); restarting it", process.exitcode
                )
                self._spawn()  # nothing is lost: the rows wait on the spool
            self.report()

    def close(self) -> None:
        """Spool what is buffered, let the shipper drain this run's segments for at most
        ``drain_seconds``, then stop. Segments left stay on the volume for the next server."""
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=2)
        self.spool.close()
        process = self._process
        if process is not None:
            self._stop_shipping.set()
            process.join(timeout=self.drain_seconds + 3)
            if process.is_alive():
                log.error("prediction log shipper did not stop; killing it")
                process.kill()  # it ignores SIGTERM by design
                process.join(timeout=2)
            self._process = None
        self.report()
        left = self.pending
        if left > 0:
            log.warning("%d prediction rows left on the spool for the next server", left)
        self.spool.release()

    # -- hot path ------------------------------------------------------------------------------
    def submit(self, batch: LogBatch) -> bool:
        """Spool a batch; False (and counted) when the spool is full. Never raises."""
        try:
            return self.spool.submit(batch)
        except Exception:
            log.exception("prediction log submit failed")
            return False

    def flush(self) -> None:
        """Write the buffered batches to the spool now (tests)."""
        self.spool.flush()

    @property
    def pending(self) -> int:
        """Rows this server accepted that are not stored (or counted as dropped) yet."""
        return shipper.pending_rows(self._counters, self.spool.counts)

    def counts(self) -> dict[str, int]:
        """Totals since start: stored, dropped by reason, failed ship attempts, not stored yet."""
        own = self.spool.counts
        c = self._counters
        return {
            "accepted": int(own[spool.ACCEPTED]),
            "written": c[shipper.WRITTEN],
            "dropped_queue_full": int(own[spool.FULL]),
            "dropped_write_error": c[shipper.REJECTED] + int(own[spool.FAILED]),
            "dropped_writer_lost": c[shipper.LOST],
            "failed_attempts": c[shipper.FAILED_ATTEMPTS],
            "queued": self.pending,
        }

    def report(self) -> None:
        """Send count deltas since the last report to ``on_counts``."""
        if self._on_counts is None:
            return
        with self._lock:
            counts = self.counts()
            now = {
                "written": counts["written"],
                "failed": counts["failed_attempts"],
                "queue_full": counts["dropped_queue_full"],
                "write_error": counts["dropped_write_error"],
                "writer_lost": counts["dropped_writer_lost"],
            }
            delta = {k: v - self._seen.get(k, 0) for k, v in now.items()}
            self._seen = now
        dropped = {k: delta[k] for k in ("queue_full", "write_error", "writer_lost")}
        self._on_counts(delta["written"], dropped, delta["failed"], max(0, counts["queued"]))

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every accepted row is stored or counted (tests, benchmarks)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.spool.flush()
            if self.pending <= 0:
                self.report()
                return True
            time.sleep(0.05)
        return False
