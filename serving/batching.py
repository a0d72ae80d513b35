"""Adaptive micro-batching: concurrent requests share one ``predict`` call.

A scikit-learn ``predict`` costs about the same for 1 row as for 100 (the cost is per call:
input validation, the Pipeline's steps), so merging the rows of concurrent requests is where a
Python model server's throughput comes from; Triton's dynamic batcher, MLServer's adaptive
batching and BentoML's do the same.

How a batch forms, per model, on the event loop:

* A request appends its rows and, if no flush is pending, schedules one for the next loop
  iteration. Requests whose bytes arrived in the same iteration join it, and so do those that
  arrive while a predict runs; so under load the batch grows by itself, and a lone request
  waits for nothing.
* Adaptive wait: when traffic is concurrent (recent batches held several requests) but the
  pending batch is smaller than usual, the flush waits a little more, never beyond
  ``max_wait`` after the oldest request arrived. Under load the requests of one round of
  clients reach the batcher a little apart, each read and parsed in turn; flushing once half
  the usual batch was there split 8 concurrent 100-row requests into calls of about 5, and each
  call pays scikit-learn's per-call validation (~0.2-0.4 ms). Waiting for the usual batch
  served 10-16% more requests/s at 8 connections (docs/benchmarks.md). "Usual" rises at once
  and decays by a fifth per flush, so one round split by a hiccup does not settle the
  batcher on thin batches, and a burst that ends costs a lone client a few waits of at most
  ``max_wait``.
* One flush predicts at most ``max_rows`` rows, so the CPU time taken from the event loop per
  iteration is bounded; the rest goes in the next iteration.

The predict runs on the event loop thread: it is short and bounded, and the hand-off to a
thread would cost more than it frees (the model holds the GIL for most of its work anyway).
A batch that fails is retried request by request, so one bad input fails only its request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class _Queue:
    __slots__ = ("model", "items", "rows", "scheduled", "typical", "first_at")

    def __init__(self, model: Any):
        self.model = model
        self.items: list[tuple[np.ndarray, asyncio.Future]] = []
        self.rows = 0
        self.scheduled = False
        self.typical = 1.0  # requests per flush lately: up at once, down by a fifth per flush
        self.first_at = 0.0


class MicroBatcher:
    """Merges concurrent ``predict`` calls per model into one call of ``model.predict``."""

    def __init__(
        self,
        max_rows: int = 4096,
        max_wait: float = 0.002,
        on_batch: Callable[[int, float], None] | None = None,
    ):
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._on_batch = on_batch
        self._queues: dict[int, _Queue] = {}

    async def predict(self, model: Any, X: np.ndarray) -> np.ndarray:
        """Predictions for the rows of ``X`` (``model.predict`` must map rows independently)."""
        loop = asyncio.get_running_loop()
        key = id(model)
        queue = self._queues.get(key)
        if queue is None:
            if len(self._queues) >= 8:  # forget idle queues of models swapped out
                for stale in [k for k, q in self._queues.items() if not q.items]:
                    del self._queues[stale]
            queue = self._queues[key] = _Queue(model)
        future = loop.create_future()
        if not queue.items:
            queue.first_at = time.perf_counter()
        queue.items.append((X, future))
        queue.rows += len(X)
        if not queue.scheduled:
            queue.scheduled = True
            loop.call_soon(self._flush, key)
        return await future

    def _flush(self, key: int) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        queue.scheduled = False
        if not queue.items:
            return
        loop = asyncio.get_event_loop()
        waited = time.perf_counter() - queue.first_at
        if (
            queue.rows < self.max_rows
            and len(queue.items) < queue.typical - 0.5
            and waited < self.max_wait
        ):
            # Concurrent traffic but a thin batch: let the others join, briefly.
            queue.scheduled = True
            loop.call_later(min(self.max_wait - waited, self.max_wait / 4), self._flush, key)
            return
        take, rows = 0, 0
        for X, _ in queue.items:
            if take and rows + len(X) > self.max_rows:
                break
            take += 1
            rows += len(X)
        batch, queue.items = queue.items[:take], queue.items[take:]
        queue.rows -= rows
        queue.typical = max(take, queue.typical + 0.2 * (take - queue.typical))
        if queue.items:
            queue.first_at = time.perf_counter()
            queue.scheduled = True
            loop.call_soon(self._flush, key)
        self._run(queue.model, batch, rows)

    def _run(self, model: Any, batch: list[tuple[np.ndarray, asyncio.Future]], rows: int) -> None:
        started = time.perf_counter()
        try:
            X = batch[0][0] if len(batch) == 1 else np.concatenate([x for x, _ in batch])
            y = model.predict(X)
            if len(y) != rows:
                raise ValueError(f"model returned {len(y)} predictions for {rows} rows")
        except Exception as exc:  # noqa: BLE001 - isolate the failing request below
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            log.warning("batch of %d requests failed (%s); retrying one by one", len(batch), exc)
            for item in batch:
                self._run(model, [item], len(item[0]))
            return
        if self._on_batch is not None:
            self._on_batch(rows, time.perf_counter() - started)
        offset = 0
        for X, future in batch:
            n = len(X)
            if not future.done():
                future.set_result(y[offset : offset + n])
            offset += n
