"""What the server does, as plain code: the routes in ``serving.app`` only translate HTTP.

``Runtime`` holds everything one server process needs (models, micro-batcher, feature lookups,
prediction log, metrics) and implements predict, V2 infer, features, feedback and the rollout
controls. Tests build it from fakes and call it without a server.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.batching import MicroBatcher
from serving.errors import (
    InvalidField,
    ModelNotReady,
    NotFound,
    PredictionFailed,
    ServingError,
    Unavailable,
)
from serving.features import OnlineFeatures
from serving.inputs import dumps, parse_predict
from serving.metrics import Metrics
from serving.models import ModelRepository, ServedModel, Snapshot, align_classes
from serving.prediction_log import LogBatch, PredictionLog
from serving.settings import ServingSettings
from serving.v2 import (
    CLASSIFICATION_OUTPUTS,
    REGRESSION_OUTPUTS,
    infer_response,
    model_metadata,
    parse_infer,
)

log = logging.getLogger(__name__)

CHAMPION, CANARY, SHADOW = "champion", "canary", "shadow"
# Role and version of a request whose records the champion and the canary shared.
MIXED = "mixed"
BUCKETS = 10_000
MAX_PENDING_SHADOWS = 2_000


@dataclass(frozen=True)
class Answer:
    """A response body and what the request metrics need to know about it."""

    body: bytes
    model_version: str  # registry version number (MIXED when both models answered)
    role: str  # CHAMPION, CANARY or MIXED
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class Scored:
    """Predictions of one request and who made them.

    ``y``: values ``(N,)``, or a classifier's probabilities ``(N, C)`` with columns in
    ``classes`` order."""

    y: np.ndarray
    labels: str | list[str]  # V-name of the model, or one per row when the canary took some
    role: str  # champion, canary, or mixed
    version: str  # registry version number of the one model (MIXED when mixed)
    model: ServedModel | None
    classes: np.ndarray | None = None


def class_answers(
    probabilities: np.ndarray, classes: np.ndarray
) -> tuple[list[Any], list[dict[str, float]]]:
    """Each row's label (the most probable class, as ``predict`` gives it) and its
    probabilities by class name (JSON keys are strings, so an integer class 3 is ``"3"``)."""
    labels = classes[probabilities.argmax(axis=1)].tolist()
    names = [str(c) for c in classes.tolist()]
    return labels, [dict(zip(names, row, strict=True)) for row in probabilities.tolist()]


_SUFFIXES: list[str] = []


def _suffixes(n: int) -> list[str]:
    """``["-0", "-1", ...]``: the per-record request id suffixes, made once."""
    if len(_SUFFIXES) < n:
        _SUFFIXES.extend(f"-{i}" for i in range(len(_SUFFIXES), n))
    return _SUFFIXES[:n]


def freeze_heap() -> None:
    """Move everything alive now (libraries, the loaded models) out of the garbage collector's
    sight. MLflow, Feast, pandas and scikit-learn leave millions of long-lived objects; each
    full collection walked them all and stalled the event loop for 100-250 ms every few
    seconds under load. Called after each model swap (a full collection then frees the models
    swapped out)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def bucket(salt: str, key: str) -> int:
    """A stable bucket in [0, 10000) for a routing key (same key, same bucket, every process)."""
    digest = hashlib.blake2b(f"{salt}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % BUCKETS


def canary_positions(keys: Sequence[str | None], weight: float, salt: str) -> list[int]:
    """Records that go to the candidate: those whose key falls in the first ``weight`` share
    of buckets. Sticky (the bucket depends only on the key and the candidate version) and
    monotonic (raising the weight keeps earlier keys on the candidate). A record without a key
    gets a random bucket."""
    threshold = int(round(weight * BUCKETS))
    if threshold <= 0:
        return []
    out = []
    for i, key in enumerate(keys):
        b = random.randrange(BUCKETS) if key is None else bucket(salt, key)
        if b < threshold:
            out.append(i)
    return out


class Runtime:
    """One server process: the pieces, their lifecycle and the operations routes call."""

    def __init__(
        self,
        settings: ServingSettings,
        model_name: str,
        metrics: Metrics,
        models: ModelRepository,
        features: OnlineFeatures | None = None,
        prediction_log: PredictionLog | None = None,
        task: str = "regression",
    ):
        self.settings = settings
        self.model_name = model_name
        self.task = task
        self.metrics = metrics
        self.models = models
        self.features = features
        self.log = prediction_log
        self.batcher = MicroBatcher(
            max_rows=settings.batch_max_rows,
            max_wait=settings.batch_max_wait_ms / 1000.0,
            on_batch=self._observe_batch,
        )
        self._shadows: set[asyncio.Task] = set()
        self._feedback_engine: Any = None
        self._feedback_lock = threading.Lock()
        self._started = False

    # -- construction and lifecycle ------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: ServingSettings) -> Runtime:
        """The real thing: MLflow registry, Feast online store, prediction log writer."""
        from kubeloop import model_store
        from kubeloop.feature_store import open_store
        from kubeloop.spec import load_spec
        from serving.feature_layout import read_layout
        from serving.online_lookup import make_lookup

        # The spec may hold ${KUBELOOP_WORK_DIR}; the CLI exports settings the same way.
        os.environ.setdefault("KUBELOOP_WORK_DIR", str(settings.work_dir))
        spec = load_spec(settings.spec)
        model_name = settings.model_name(spec)  # the project's model, or production's
        metrics = Metrics(settings.prediction_buckets)

        def open_features():
            store = open_store(settings, spec)
            layout = read_layout(store, spec.features.service)
            return layout, make_lookup(
                store, layout, settings.feast_online_store, settings.redis_url
            )

        features = OnlineFeatures(open_features, metrics=metrics)
        models = ModelRepository(
            lambda: model_store.configure(settings),
            model_name,
            champion_alias=settings.champion_alias,
            candidate_alias=settings.candidate_alias,
            shadow=settings.shadow_enabled,
            canary_weight=settings.canary_weight,
            poll_seconds=settings.registry_poll_seconds,
            metrics=metrics,
            feature_check=features.check,
            on_swap=freeze_heap,
        )
        prediction_log = PredictionLog(
            settings.log_url,
            settings.spool_dir,
            spool_max_bytes=settings.log_spool_max_bytes,
            batch_rows=settings.log_batch_rows,
            flush_seconds=settings.log_flush_seconds,
            drain_seconds=settings.log_drain_seconds,
            nice=settings.log_writer_nice,
            on_counts=metrics_log_counts(metrics),
        )
        return cls(settings, model_name, metrics, models, features, prediction_log, spec.task)

    def start(self) -> None:
        """Start the log writer, then (in the background) open the feature store and load the
        models: liveness answers at once, readiness once a champion is loaded."""
        if self._started:
            return
        self._started = True
        self.metrics.model_ready.set(0)
        self.metrics.canary_weight.set(0)
        if self.log is not None:
            self.log.start()

        def boot() -> None:
            if self.features is not None:
                self.features.open()
            self.models.start()

        threading.Thread(target=boot, name="kubeloop-boot", daemon=True).start()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait (without blocking the loop) until a champion serves, at most ``timeout``."""
        if timeout <= 0:
            return self.models.state.ready
        ready = await asyncio.to_thread(self.models.ready_event.wait, timeout)
        if not ready:
            log.warning(
                "no champion after %.0fs: accepting connections, not ready yet (%s)",
                timeout,
                "; ".join(self.models.last_error.values()) or "loading",
            )
        return ready

    async def stop(self) -> None:
        """Finish shadow scoring, stop watching, flush the log."""
        if self._shadows:
            await asyncio.wait(list(self._shadows), timeout=5)
        self.models.stop()
        if self.features is not None:
            await self.features.close()
        if self.log is not None:
            await asyncio.to_thread(self.log.close)
        if self._feedback_engine is not None:
            self._feedback_engine.dispose()

    # -- predict -------------------------------------------------------------------------------
    def ready_state(self) -> Snapshot:
        state = self.models.state
        if state.champion is None:
            reason = "; ".join(self.models.last_error.values()) or "loading"
            raise ModelNotReady(f"no model is loaded yet ({reason}); retry shortly", field=None)
        return state

    def _parse_entity(self, raw: Any, field: str) -> int | str:
        if self.features is None:
            raise InvalidField(
                "this server has no online feature store: send features", field=field
            )
        return self.features.parse_entity(raw, field)

    async def predict(self, body: bytes, base_id: str) -> Answer:
        """``POST /predict``: records (entity ids or explicit features) to predictions."""
        state = self.ready_state()
        batch = parse_predict(
            body, state.input_features, self._parse_entity, self.settings.max_batch_records
        )
        if batch.entity_positions:
            positions = batch.entity_positions
            assert self.features is not None
            batch.X[positions] = await self.features.matrix(
                [entity for i in positions if (entity := batch.entity_ids[i]) is not None],
                state.input_features,
                [f"records[{i}].entity_id" for i in positions],
            )
        entity_labels = None
        if batch.has_entity_ids:
            entity_labels = [None if e is None else str(e) for e in batch.entity_ids]
        scored = await self._score(state, batch.X, batch.keys, entity_labels, base_id)
        labels = scored.labels
        ids = [base_id + suffix for suffix in _suffixes(len(scored.y))]
        if scored.classes is not None:
            items = self._class_items(scored, ids)
        elif isinstance(labels, str):
            preds = scored.y.tolist()
            items = [
                {"request_id": i, "prediction": p, "model_version": labels}
                for i, p in zip(ids, preds, strict=True)
            ]
        else:
            items = [
                {"request_id": i, "prediction": p, "model_version": lab}
                for i, p, lab in zip(ids, scored.y.tolist(), labels, strict=True)
            ]
        body_out = dumps({"request_id": base_id, "model": self.model_name, "predictions": items})
        return Answer(body_out, scored.version, scored.role)

    @staticmethod
    def _class_items(scored: Scored, ids: list[str]) -> list[dict[str, Any]]:
        """``/predict`` items of a classifier: the label and the probability of every class."""
        assert scored.classes is not None
        predicted, probabilities = class_answers(scored.y, scored.classes)
        versions = [scored.labels] * len(ids) if isinstance(scored.labels, str) else scored.labels
        return [
            {"request_id": i, "prediction": p, "probabilities": q, "model_version": v}
            for i, p, q, v in zip(ids, predicted, probabilities, versions, strict=True)
        ]

    async def _score(
        self,
        state: Snapshot,
        X: np.ndarray,
        keys: Sequence[str | None],
        entity_labels: list[str | None] | None,
        base_id: str,
    ) -> Scored:
        """Route rows to the champion or the canary, predict, log, and shadow."""
        champion = state.champion
        assert champion is not None
        ts = time.time()
        candidate = state.candidate
        canary: list[int] = []
        if state.canary_active and candidate is not None:
            canary = canary_positions(
                keys, state.canary_weight, f"{candidate.name}:{candidate.version}"
            )
        n = len(X)
        if not canary:
            return await self._score_with(state, champion, CHAMPION, X, entity_labels, base_id, ts)
        assert candidate is not None
        if len(canary) == n:
            return await self._score_with(state, candidate, CANARY, X, entity_labels, base_id, ts)
        taken = set(canary)
        rest = [i for i in range(n) if i not in taken]
        Xc, Xk = X[rest], X[canary]
        yc, yk = await asyncio.gather(
            self._predict(champion, CHAMPION, state.inputs_for(champion, Xc)),
            self._predict(candidate, CANARY, state.inputs_for(candidate, Xk)),
        )
        classes = champion.classes
        if classes is not None and candidate.classes is not None:
            yk_answer = align_classes(yk, candidate.classes, classes)
        else:
            yk_answer = yk
        y = np.empty((n, *yc.shape[1:]), dtype=np.float64)
        y[rest], y[canary] = yc, yk_answer
        labels = [champion.label] * n
        for i in canary:
            labels[i] = candidate.label

        def sub(pos: list[int]) -> list[str | None] | None:
            return None if entity_labels is None else [entity_labels[i] for i in pos]

        self._record(state, champion, CHAMPION, Xc, yc, rest, sub(rest), base_id, ts)
        self._record(state, candidate, CANARY, Xk, yk, canary, sub(canary), base_id, ts)
        if state.shadow_active:
            self._shadow(state, Xc, rest, sub(rest), base_id, ts)
        return Scored(y, labels, MIXED, MIXED, None, classes)

    async def _score_with(
        self,
        state: Snapshot,
        model: ServedModel,
        role: str,
        X: np.ndarray,
        entity_labels: list[str | None] | None,
        base_id: str,
        ts: float,
    ) -> Scored:
        """Every row to one model, logged; the champion's rows are shadowed as usual."""
        y = await self._predict(model, role, state.inputs_for(model, X))
        self._record(state, model, role, X, y, None, entity_labels, base_id, ts)
        if role == CHAMPION and state.shadow_active:
            self._shadow(state, X, None, entity_labels, base_id, ts)
        return Scored(y, model.label, role, model.version, model, model.classes)

    async def _predict(self, model: ServedModel, role: str, X: np.ndarray) -> np.ndarray:
        try:
            return await self.batcher.predict(model, X)
        except ServingError:
            raise
        except Exception as exc:  # the model's own failure on valid input
            log.exception("model %s %s failed", model.name, model.label)
            raise PredictionFailed(
                f"model {model.label} failed on this input ({exc.__class__.__name__}: {exc})",
                model_version=model.version,
                role=role,
            ) from exc

    def _record(
        self,
        state: Snapshot,
        model: ServedModel,
        role: str,
        X: np.ndarray,
        y: np.ndarray,
        positions: list[int] | None,
        entity_labels: list[str | None] | None,
        base_id: str,
        ts: float,
    ) -> None:
        """Metrics and the prediction log for one model's part of a request (never raises)."""
        if model.classes is None:
            self.metrics.observe_predictions(model.version, role, y)
        else:
            self.metrics.observe_classes(model.version, role, y, model.classes)
        if self.log is not None:
            self.log.submit(
                LogBatch(
                    base_id=base_id,
                    ts=ts,
                    positions=positions,
                    entity_ids=entity_labels,
                    feature_names=model.features,
                    features=state.inputs_for(model, X),
                    predictions=y,
                    classes=model.classes,
                    model_name=model.name,
                    model_version=model.version,
                    model_label=model.label,
                    role=role,
                )
            )

    def _shadow(
        self,
        state: Snapshot,
        X: np.ndarray,
        positions: list[int] | None,
        entity_labels: list[str | None] | None,
        base_id: str,
        ts: float,
    ) -> None:
        """Score the same rows with the candidate after the response; log them as 'shadow'."""
        if len(self._shadows) >= MAX_PENDING_SHADOWS:
            self.metrics.shadow_dropped.inc()
            return
        task = asyncio.get_running_loop().create_task(
            self._run_shadow(state, X, positions, entity_labels, base_id, ts)
        )
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _run_shadow(
        self,
        state: Snapshot,
        X: np.ndarray,
        positions: list[int] | None,
        entity_labels: list[str | None] | None,
        base_id: str,
        ts: float,
    ) -> None:
        candidate = state.candidate
        assert candidate is not None
        try:
            y = await self.batcher.predict(candidate, state.inputs_for(candidate, X))
        except Exception as exc:  # noqa: BLE001 - a failing shadow never affects callers
            log.warning("shadow model %s failed: %s", candidate.label, exc)
            return
        self._record(state, candidate, SHADOW, X, y, positions, entity_labels, base_id, ts)

    def _observe_batch(self, rows: int, seconds: float) -> None:
        self.metrics.batch_rows.observe(rows)
        self.metrics.predict_duration.observe(seconds)

    # -- Open Inference Protocol ---------------------------------------------------------------
    def check_model_name(self, name: str, version: str | None = None) -> Snapshot:
        if name != self.model_name:
            raise NotFound(
                f"no model named {name!r}; this server serves {self.model_name!r}",
                field="model_name",
            )
        state = self.ready_state()
        if version is not None and version not in self._versions(state):
            raise NotFound(
                f"{name} has no loaded version {version!r}; loaded: "
                f"{', '.join(self._versions(state))}",
                field="model_version",
            )
        return state

    @staticmethod
    def _versions(state: Snapshot) -> list[str]:
        out = []
        for model in (state.champion, state.candidate):
            if model is not None:
                out += [model.version, model.label]
        return out

    async def infer(
        self,
        name: str,
        body: bytes,
        header_length: str | None,
        base_id: str,
        version: str | None = None,
    ) -> Answer:
        """``POST /v2/models/{name}[/versions/{v}]/infer``."""
        state = self.check_model_name(name, version)
        assert state.champion is not None
        request = parse_infer(
            body,
            header_length,
            state.input_features,
            self.settings.max_batch_records,
            REGRESSION_OUTPUTS if state.champion.classes is None else CLASSIFICATION_OUTPUTS,
        )
        candidate = state.candidate
        if version is None:
            scored = await self._score(state, request.X, [None] * len(request.X), None, base_id)
        elif candidate is not None and version in (candidate.version, candidate.label):
            scored = await self._score_with(
                state, candidate, CANARY, request.X, None, base_id, time.time()
            )
        else:  # check_model_name let only a loaded version through: the champion
            scored = await self._score_with(
                state, state.champion, CHAMPION, request.X, None, base_id, time.time()
            )
        body_out, headers = infer_response(
            name, scored.version, request.id or base_id, scored.y, request.outputs, scored.classes
        )
        return Answer(body_out, scored.version, scored.role, headers)

    def v2_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        state = self.check_model_name(name, version)
        versions = [m.version for m in (state.champion, state.candidate) if m is not None]
        assert state.champion is not None
        return model_metadata(name, versions, state.input_features, state.champion.classes)

    # -- features, feedback, status ------------------------------------------------------------
    async def features_of(self, entity_id: str) -> dict[str, Any]:
        if self.features is None:
            raise Unavailable("this server has no online feature store")
        return await self.features.features_of(entity_id)

    def _engine(self) -> Any:
        from kubeloop.log_store import ensure_schema, make_engine

        with self._feedback_lock:
            if self._feedback_engine is None:
                engine = make_engine(self.settings.log_url)
                ensure_schema(engine)
                self._feedback_engine = engine
            return self._feedback_engine

    def _actual(self, value: float | str, field: str) -> float | str:
        """The ground truth as the task stores it: a finite number for regression, a class
        label (string or integer, one of the champion's classes when one is loaded) for
        classification."""
        if self.task != "classification":
            if isinstance(value, str) or not math.isfinite(value):
                raise InvalidField(
                    f"{field} must be a finite number: {self.model_name} is a regression model",
                    field=field,
                )
            return value
        if isinstance(value, float) and not value.is_integer():
            raise InvalidField(
                f"{field} must be a class label (a string or an integer): {self.model_name} "
                "is a classification model",
                field=field,
            )
        label = value if isinstance(value, str) else str(int(value))
        champion = self.models.state.champion
        if champion is not None and champion.classes is not None:
            known = [str(c) for c in champion.classes.tolist()]
            if label not in known:
                raise InvalidField(
                    f"{field} {label!r} is not a class of {self.model_name} "
                    f"(classes: {', '.join(known)})",
                    field=field,
                )
        return label

    async def feedback(self, items: Sequence[tuple[str, float | str]], many: bool = True) -> int:
        """Store ground truth; 503 when the prediction log's database cannot take it."""
        from serving.prediction_log import write_feedback

        checked = [
            (rid, self._actual(actual, f"[{i}].actual" if many else "actual"))
            for i, (rid, actual) in enumerate(items)
        ]

        def write() -> None:
            write_feedback(self._engine(), checked)

        try:
            await asyncio.to_thread(write)
        except Exception as exc:  # a failing shadow never affects callers
            log.warning("feedback not stored: %s", exc)
            raise Unavailable(
                f"the prediction log database is unavailable "
                f"({exc.__class__.__name__}); retry the feedback later"
            ) from exc
        return len(items)

    def status(self) -> dict[str, Any]:
        """Readiness details: what serves, the rollout, the last errors."""
        state = self.models.state
        return {
            "ready": state.ready,
            "model": self.model_name,
            "champion": state.champion.describe() if state.champion else None,
            "candidate": state.candidate.describe() if state.candidate else None,
            "canary_weight": state.canary_weight if state.candidate else 0.0,
            "shadow": state.shadow_active,
            "features": {
                "backend": self.features.lookup.backend
                if self.features and self.features.lookup
                else None,
                "error": self.features.error if self.features else None,
            },
            "prediction_log": self.log.counts() if self.log is not None else None,
            "errors": dict(self.models.last_error),
            "last_registry_poll": self.models.last_poll,
        }

    async def set_canary_weight(self, weight: float) -> dict[str, Any]:
        try:
            await asyncio.to_thread(self.models.set_canary_weight, weight)
        except LookupError as exc:
            raise InvalidField(str(exc), field="weight") from exc
        except ValueError as exc:
            raise InvalidField(str(exc), field="weight") from exc
        except Exception as exc:  # database down: tell the caller to retry
            raise Unavailable(
                f"could not store the canary weight in the registry "
                f"({exc.__class__.__name__}: {exc}); nothing changed"
            ) from exc
        return self.status()

    async def reload(self) -> dict[str, Any]:
        """Poll the registry now (after a promotion, instead of waiting for the interval)."""
        await asyncio.to_thread(self.models.poll_once)
        return self.status()

    def metrics_body(self) -> bytes:
        if self.log is not None:
            self.log.report()
        return self.metrics.exposition()


def metrics_log_counts(metrics: Metrics):
    """The prediction log's ``on_counts`` callback: deltas into counters, depth into a gauge."""

    def on_counts(written: int, dropped: dict[str, int], failed: int, queued: int) -> None:
        if written:
            metrics.log_written.inc(written)
        for reason, n in dropped.items():
            if n:
                metrics.log_dropped.labels(reason).inc(n)
        if failed:
            metrics.log_write_failures.inc(failed)
        metrics.log_queue.set(queued)

    return on_counts
