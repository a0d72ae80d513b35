"""The prediction log's spool: the batches the model saw, as Arrow IPC files on the pod's volume.

A database that is slow or down must neither slow predictions nor lose rows, so nothing on the
request path talks to it. ``SpoolWriter.submit`` appends the batch (references to its arrays:
no copy, no per-row work) to a list and bumps a counter in a memory-mapped file; every
``flush_seconds`` a thread writes what accumulated as one segment per feature set (to a
temporary name, then renamed: a segment is whole or absent). ``serving.shipper`` stores the
segments in the database and deletes them.

Layout: one directory per server process, ``<spool>/<run id>/``, holding

- ``lock``: an flock the server process holds for its life. A dead run's lock is free, so
  another server (the restarted container, on the same volume) adopts the directory and ships
  what it left;
- ``counters``: int64 counters in a shared memory map (``ACCEPTED``, ``SPOOLED``, ``FULL``,
  ``FAILED``). The page cache outlives a SIGKILL, so the adopter can count the accepted rows
  that never reached a segment (at most one flush interval);
- ``seg-<sequence>.arrow``: segments, shipped in name order; ``rejected/``: segments the
  database refused (bad data), kept for inspection.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import orjson

if TYPE_CHECKING:
    import pyarrow as pa

    from serving.prediction_log import LogBatch

log = logging.getLogger(__name__)

ACCEPTED, SPOOLED, FULL, FAILED = range(4)  # slots of a run's counters file
SEGMENT_GLOB = "seg-*.arrow"
REJECTED = "rejected"
FEATURES_KEY = b"kubeloop.features"  # schema metadata: the feature names, JSON
CLASSES_KEY = b"kubeloop.classes"  # schema metadata of a classifier's segment: its classes, JSON
ROW_OVERHEAD = 64  # bytes a row takes in a segment besides its features (ids, names, ts)


def group_key(batch: LogBatch) -> tuple:
    """Batches that share a segment: the same features and, for a classifier, the same
    classes (a segment's columns and metadata are those of one model's output)."""
    if batch.classes is None:
        return (batch.feature_names,)
    return (batch.feature_names, tuple(batch.classes.tolist()))


def to_table(batches: Sequence[LogBatch]) -> pa.Table:
    """Batches of one ``group_key`` as one Arrow table: per-row arrays are concatenated,
    per-batch values (request id, model, role) become dictionary columns indexed by batch. One
    Python pass over the batches, none over rows. A classifier's rows carry ``prediction``, the
    probability of the predicted class, ``label``, that class, and ``probabilities``, every
    class's (the classes in the schema metadata)."""
    import pyarrow as pa

    names = batches[0].feature_names
    base, model, version, label, role, stamp, size = zip(
        *[
            (b.base_id, b.model_name, b.model_version, b.model_label, b.role, b.ts, len(b))
            for b in batches
        ],
        strict=True,
    )
    sizes = np.asarray(size, np.int64)
    rows = int(sizes.sum())
    starts = np.cumsum(sizes) - sizes
    which = np.repeat(np.arange(len(batches), dtype=np.int32), sizes)
    positions = (np.arange(rows, dtype=np.int64) - starts[which]).astype(np.int32)
    for start, batch in zip(starts.tolist(), batches, strict=True):
        if batch.positions is not None:  # part of a request (canary split)
            positions[start : start + len(batch)] = batch.positions
    indices = pa.array(which)

    def per_batch(values: tuple[str, ...]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(indices, pa.array(values, pa.string()))

    if any(b.entity_ids is not None for b in batches):
        entities = pa.array(
            list(
                chain.from_iterable(
                    [None] * len(b) if b.entity_ids is None else b.entity_ids for b in batches
                )
            ),
            pa.string(),
        )
    else:
        entities = pa.nulls(rows, pa.string())
    features = np.concatenate([b.features for b in batches]).astype(np.float64, copy=False)
    stamps = (np.asarray(stamp, np.float64) * 1e6).astype(np.int64)[which]
    predicted = np.concatenate([b.predictions for b in batches]).astype(np.float64, copy=False)
    classes = batches[0].classes
    metadata = {FEATURES_KEY: orjson.dumps(list(names))}
    extra: dict[str, pa.Array] = {}
    if classes is not None:
        best = predicted.argmax(axis=1)
        extra = {
            "label": pa.array(classes.astype(str)[best], pa.string()),
            "probabilities": pa.FixedSizeListArray.from_arrays(
                pa.array(predicted.ravel()), len(classes)
            ),
        }
        predicted = predicted[np.arange(rows), best]
        metadata[CLASSES_KEY] = orjson.dumps([str(c) for c in classes.tolist()])
    columns = {
        "base_id": per_batch(base),
        "position": pa.array(positions),
        "ts": pa.array(stamps, pa.timestamp("us", tz="UTC")),
        "entity_id": entities,
        "features": pa.FixedSizeListArray.from_arrays(pa.array(features.ravel()), len(names)),
        "prediction": pa.array(predicted),
        "model_name": per_batch(model),
        "model_version": per_batch(version),
        "model_label": per_batch(label),
        "role": per_batch(role),
        **extra,
    }
    return pa.table(columns).replace_schema_metadata(metadata)


def feature_names(table: pa.Table) -> list[str]:
    return orjson.loads(table.schema.metadata[FEATURES_KEY])


def class_names(table: pa.Table) -> list[str] | None:
    """A classifier's segment: its classes (column order of ``probabilities``); else None."""
    raw = (table.schema.metadata or {}).get(CLASSES_KEY)
    return None if raw is None else orjson.loads(raw)


def read_segment(path: Path) -> pa.Table:
    import pyarrow as pa

    with pa.OSFile(str(path), "rb") as source:
        return pa.ipc.open_file(source).read_all()


def segments(run_dir: Path) -> list[Path]:
    """The run's segments, oldest first."""
    return sorted(run_dir.glob(SEGMENT_GLOB))


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under the spool (a directory being created starts with a dot)."""
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def spool_bytes(root: Path) -> int:
    """Bytes the spool holds (every run's segments, the rejected ones included). Servers sharing
    the volume create, rename and remove run directories during the walk: ``os.walk`` skips a
    directory that vanished (``Path.rglob`` raised, and a replica failed to start), and a
    segment shipped meanwhile is not counted."""
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".arrow"):
                try:
                    total += os.stat(os.path.join(folder, name)).st_size
                except FileNotFoundError:
                    continue
    return total


def try_lock(run_dir: Path) -> int | None:
    """The run's lock as an open descriptor, or None when its process is alive."""
    try:
        fd = os.open(run_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # removed meanwhile
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def read_counters(run_dir: Path) -> np.ndarray:
    """A run's counters (zeros when the file is missing or short)."""
    out = np.zeros(4, np.int64)
    try:
        data = np.fromfile(run_dir / "counters", np.int64)
    except FileNotFoundError:
        return out
    out[: min(4, len(data))] = data[:4]
    return out


def remove_run(run_dir: Path, fd: int | None) -> None:
    """Delete a run directory whose segments are all shipped (rejected ones are kept)."""
    if (run_dir / REJECTED).exists():
        for name in ("counters", "lock"):
            (run_dir / name).unlink(missing_ok=True)
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    if fd is not None:
        os.close(fd)


class SpoolWriter:
    """The server side of the spool: a non-blocking ``submit`` and a flushing thread.

    Drops (and counts, ``FULL``) only when the spool already holds ``max_bytes``.
    """

    def __init__(self, root: Path, *, max_bytes: int, flush_seconds: float):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.flush_seconds = flush_seconds
        self.run_dir = self.root / "not-open"
        self._buffer: list[LogBatch] = []
        self._buffer_bytes = 0
        self._used = 0  # bytes on disk at the last flush
        self._sequence = 0
        self._lock = threading.Lock()  # the buffer swap
        self._flush_lock = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self.counts = np.zeros(4, np.int64)  # replaced by the memory map on open

    def open(self) -> Path:
        """Create this run's directory (locked, then renamed into place so no other server
        adopts it half made) and start flushing."""
        run = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns():x}-{uuid.uuid4().hex[:6]}"
        self.root.mkdir(parents=True, exist_ok=True)
        making = self.root / f".{run}"
        making.mkdir()
        self._fd = try_lock(making)
        with open(making / "counters", "wb") as out:
            out.write(bytes(8 * 4))
        with open(making / "counters", "r+b") as out:
            self._map = mmap.mmap(out.fileno(), 8 * 4)
        self.counts = np.ndarray((4,), np.int64, buffer=self._map)
        self.run_dir = self.root / run
        making.rename(self.run_dir)
        self._used = spool_bytes(self.root)
        self._thread = threading.Thread(target=self._run, name="prediction-log-spool", daemon=True)
        self._thread.start()
        return self.run_dir

    def submit(self, batch: LogBatch) -> bool:
        """Buffer a batch for the next segment; False (counted) when the spool is full."""
        n = len(batch)
        size = batch.features.nbytes + n * ROW_OVERHEAD
        counts = self.counts
        counts[ACCEPTED] += n
        if self._used + self._buffer_bytes + size > self.max_bytes:
            counts[FULL] += n
            return False
        with self._lock:
            self._buffer.append(batch)
            self._buffer_bytes += size
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # an unexpected failure must not end the flushing for good
                log.exception("prediction log spool: flush failed; retrying at the next one")

    def flush(self) -> None:
        """Write the buffered batches as segments now."""
        with self._flush_lock:
            with self._lock:
                items, self._buffer, self._buffer_bytes = self._buffer, [], 0
            groups: dict[tuple, list[LogBatch]] = {}
            for batch in items:
                groups.setdefault(group_key(batch), []).append(batch)
            for batch_group in groups.values():
                self._write(batch_group)
            self._used = spool_bytes(self.root)

    def _write(self, batches: list[LogBatch]) -> None:
        import pyarrow as pa

        rows = sum(len(b) for b in batches)
        self._sequence += 1
        final = self.run_dir / f"seg-{self._sequence:012d}.arrow"
        partial = final.with_suffix(".partial")
        try:
            table = to_table(batches)
            with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
                out.write_table(table)
            os.replace(partial, final)
        except Exception:
            log.exception("could not spool %d prediction rows", rows)
            partial.unlink(missing_ok=True)
            self.counts[FAILED] += rows
            return
        self.counts[SPOOLED] += rows

    def close(self) -> None:
        """Stop the thread and write what is buffered. The lock stays held until ``release``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
        if self._map is not None:
            self._map.flush()

    def release(self) -> None:
        """Give the run directory up: removed when shipped, else left for the next server."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        self.counts = self.counts.copy()  # detach from the map before closing it
        if self._map is not None:
            self._map.close()
            self._map = None
        if segments(self.run_dir):
            os.close(fd)
        else:
            remove_run(self.run_dir, fd)
