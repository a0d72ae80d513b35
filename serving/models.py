"""The model repository: which versions serve, loaded once and swapped atomically.

A watcher thread polls the registry (one ``get_registered_model`` call per poll gives the
aliases and the rollout tag). When the ``champion`` alias moves, the new version is loaded,
checked and warmed up *beside* the old one, then a single attribute assignment swaps the whole
``Snapshot``: a request reads the snapshot once and uses the same models to the end, so
in-flight requests never see half a swap. A version that fails to load or check leaves the old
one serving; the failure is logged and counted.

The candidate (``challenger`` alias) is loaded only while shadow scoring or a canary weight
needs it. The canary weight set through the admin endpoint is stored on the registered model
(tag ``kubeloop.canary``, for one candidate version), so every worker and every replica follows
it and a restart keeps it; a new candidate version starts from the configured weight.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kubeloop.registry import CANARY_TAG, LoadedModel
from serving.direct_predict import direct_predictor

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ServedModel:
    """A loaded registry version with what the hot path needs precomputed.

    A classifier (a fitted model with ``classes_`` and ``predict_proba``) predicts its class
    probabilities, an ``(N, C)`` matrix with columns in ``classes`` order: the micro-batcher
    carries them like a regressor's ``(N,)`` values, and the label of each row is the class of
    its highest probability, as scikit-learn's own ``predict`` derives it. One predict call per
    batch gives both, so the regression path is unchanged and classification costs no second
    call.
    """

    loaded: LoadedModel
    alias: str
    loaded_at: float = field(default_factory=time.time)
    classes: np.ndarray | None = field(init=False, default=None)
    direct: bool = field(init=False, default=False)  # predicts through serving.direct_predict
    _values: Callable[[np.ndarray], Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        model = self.loaded.model
        classes = getattr(model, "classes_", None)  # a regressor Pipeline raises: None
        if classes is not None and hasattr(model, "predict_proba"):
            object.__setattr__(self, "classes", np.asarray(classes))
        direct = direct_predictor(model) if classes is None else None
        object.__setattr__(self, "direct", direct is not None)
        object.__setattr__(self, "_values", direct or model.predict)

    @property
    def name(self) -> str:
        return self.loaded.name

    @property
    def version(self) -> str:
        return self.loaded.version

    @property
    def label(self) -> str:
        return self.loaded.label

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.loaded.metadata_features)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """One predict call of the underlying model: a flat float64 array of values, or for a
        classifier the float64 ``(N, C)`` class probabilities."""
        if self.classes is None:
            return np.asarray(self._values(X), dtype=np.float64).reshape(-1)
        return np.asarray(self.loaded.model.predict_proba(X), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "label": self.label,
            "alias": self.alias,
            "features": list(self.features),
            "classes": None if self.classes is None else self.classes.tolist(),
            "predict": "direct" if self.direct else "estimator",
            "loaded_at": self.loaded_at,
        }


@dataclass(frozen=True, eq=False)
class Snapshot:
    """What serves right now; replaced as a whole, never changed in place."""

    champion: ServedModel | None = None
    candidate: ServedModel | None = None
    canary_weight: float = 0.0
    shadow: bool = False
    input_features: tuple[str, ...] = ()
    # Column indices of each model's features inside ``input_features`` (None: same order).
    columns: dict[int, np.ndarray | None] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.champion is not None

    @property
    def canary_active(self) -> bool:
        return self.candidate is not None and self.canary_weight > 0.0

    @property
    def shadow_active(self) -> bool:
        return self.candidate is not None and self.shadow

    def inputs_for(self, model: ServedModel, X: np.ndarray) -> np.ndarray:
        """The columns of ``X`` (in ``input_features`` order) that ``model`` takes, in its order."""
        columns = self.columns.get(id(model))
        return X if columns is None else X[:, columns]


def build_snapshot(
    champion: ServedModel | None, candidate: ServedModel | None, canary_weight: float, shadow: bool
) -> Snapshot:
    """Inputs are the champion's features in its order, then any the candidate adds."""
    active = candidate if (candidate is not None and (shadow or canary_weight > 0)) else None
    names: list[str] = list(champion.features) if champion else []
    if active is not None:
        names += [n for n in active.features if n not in names]
    index = {n: i for i, n in enumerate(names)}
    columns: dict[int, np.ndarray | None] = {}
    for model in (champion, active):
        if model is None:
            continue
        order = [index[n] for n in model.features]
        columns[id(model)] = None if order == list(range(len(names))) else np.array(order)
    return Snapshot(
        champion=champion,
        candidate=active,
        canary_weight=canary_weight,
        shadow=shadow,
        input_features=tuple(names),
        columns=columns,
    )


class ModelLoadError(Exception):
    """A registry version cannot serve (failed to load, no feature list, bad output)."""


def check_model(
    model: ServedModel, feature_check: Callable[[tuple[str, ...]], str | None] | None
) -> None:
    """Refuse a model that cannot serve: no feature list, features the store lacks, or a
    predict that fails or gives non-finite output on a neutral row (this also warms it up)."""
    if not model.features:
        raise ModelLoadError(
            f"{model.name} version {model.version} has no 'features' in its MLflow metadata; "
            "log it with the train step (metadata={'features': [...]})"
        )
    if feature_check is not None:
        problem = feature_check(model.features)
        if problem:
            raise ModelLoadError(problem)
    try:
        out = model.predict(np.zeros((2, len(model.features)), dtype=np.float64))
    except Exception as exc:  # any failure means "cannot serve"
        raise ModelLoadError(f"predict failed on a test row: {exc!r}") from exc
    expected = (2,) if model.classes is None else (2, len(model.classes))
    if out.shape != expected or not np.isfinite(out).all():
        raise ModelLoadError(
            f"predict returned {out!r} for 2 test rows; expected finite values shaped {expected}"
        )


def align_classes(probabilities: np.ndarray, classes: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``probabilities`` (columns in ``classes`` order) as columns in ``target`` order, 0 for a
    class the model does not know: a canary that learned a class set different from the
    champion's still answers in the champion's columns."""
    if np.array_equal(classes, target):
        return probabilities
    out = np.zeros((len(probabilities), len(target)), dtype=np.float64)
    index = {c: j for j, c in enumerate(target.tolist())}
    for j, c in enumerate(classes.tolist()):
        if c in index:
            out[:, index[c]] = probabilities[:, j]
    return out


def parse_canary_tag(value: str | None) -> tuple[float, str] | None:
    """``{"weight": 0.2, "version": "3"}`` -> (0.2, "3"); None when absent or unreadable."""
    if not value:
        return None
    try:
        data = json.loads(value)
        weight = float(data["weight"])
        return (weight, str(data["version"])) if 0.0 <= weight <= 1.0 else None
    except (ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable %s tag: %r", CANARY_TAG, value)
        return None


class ModelRepository:
    """Loads the aliased versions, watches the registry and swaps atomically."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        model_name: str,
        *,
        champion_alias: str = "champion",
        candidate_alias: str = "challenger",
        shadow: bool = False,
        canary_weight: float = 0.0,
        poll_seconds: float = 10.0,
        metrics: Any = None,
        loader: Callable[[Any, str, Any], LoadedModel] | None = None,
        feature_check: Callable[[tuple[str, ...]], str | None] | None = None,
        on_swap: Callable[[], None] | None = None,
    ):
        self._client_factory = client_factory
        self._client: Any = None
        self.model_name = model_name
        self.champion_alias = champion_alias
        self.candidate_alias = candidate_alias
        self.shadow = shadow
        self.default_canary_weight = canary_weight
        self.poll_seconds = poll_seconds
        self.metrics = metrics
        self._loader = loader
        self.feature_check = feature_check
        self.on_swap = on_swap
        self.state = Snapshot(shadow=shadow)
        self.last_error: dict[str, str] = {}
        self.last_poll: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.ready_event = threading.Event()  # set once a champion serves
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one poll or admin change at a time
        self._registry_weight: tuple[float, str] | None = None
        self._failing: dict[str, str] = {}  # alias -> version that failed (log once at ERROR)

    # -- registry access -----------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _load(self, version: Any) -> LoadedModel:
        if self._loader is not None:
            return self._loader(self.client, self.model_name, version)
        from kubeloop.registry import load_version

        return load_version(self.client, self.model_name, version)

    def load_version(self, alias: str, version_number: str) -> ServedModel:
        """Load and check one version; raises ModelLoadError."""
        try:
            version = self.client.get_model_version(self.model_name, version_number)
            served = ServedModel(loaded=self._load(version), alias=alias)
        except ModelLoadError:
            raise
        except Exception as exc:  # MLflow, skops and the model's own errors
            raise ModelLoadError(
                f"cannot load {self.model_name} version {version_number}: "
                f"{exc.__class__.__name__}: {exc}"
            ) from exc
        check_model(served, self.feature_check)
        return served

    # -- polling -------------------------------------------------------------------------------
    def poll_once(self) -> bool:
        """Check the registry once and swap what changed; True when the snapshot changed."""
        with self._lock:
            return self._poll()

    def _poll(self) -> bool:
        try:
            registered = self.client.get_registered_model(self.model_name)
        except Exception as exc:  # noqa: BLE001 - network and store errors keep the old state
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":  # MlflowException
                self._note_error("registry", f"no registered model named {self.model_name} yet")
            else:
                self._note_error(
                    "registry", f"registry unreachable: {exc.__class__.__name__}: {exc}"
                )
            return False
        self.last_poll = time.time()
        self.last_error.pop("registry", None)
        aliases = dict(getattr(registered, "aliases", {}) or {})
        self._registry_weight = parse_canary_tag((registered.tags or {}).get(CANARY_TAG))
        state = self.state
        champion = self._resolve(
            self.champion_alias, aliases.get(self.champion_alias), state.champion, state
        )
        candidate_version = aliases.get(self.candidate_alias)
        weight = self._weight_for(candidate_version)
        wanted = self.shadow or weight > 0
        candidate = None
        if (
            wanted
            and candidate_version
            and (champion is None or champion.version != str(candidate_version))
        ):
            candidate = self._resolve(
                self.candidate_alias, candidate_version, state.candidate, state
            )
        new = build_snapshot(champion, candidate, weight, self.shadow)
        changed = (
            new.champion is not state.champion
            or new.candidate is not state.candidate
            or new.canary_weight != state.canary_weight
        )
        if changed:
            self._swap(new)
        return changed

    def _resolve(
        self, alias: str, version: str | None, current: ServedModel | None, state: Snapshot
    ) -> ServedModel | None:
        """The model for ``alias`` at ``version``: reused when already loaded, else loaded."""
        if version is None:
            if current is not None and alias == self.champion_alias:
                # The alias was removed: keep serving rather than go dark.
                self._note_error(
                    alias,
                    f"alias '{alias}' was removed from {self.model_name}; "
                    f"still serving version {current.version}",
                )
                return current
            return None
        version = str(version)
        for loaded in (state.champion, state.candidate):
            if loaded is not None and loaded.version == version:
                self._failing.pop(alias, None)
                self.last_error.pop(alias, None)
                return loaded if loaded.alias == alias else replace(loaded, alias=alias)
        try:
            served = self.load_version(alias, version)
        except ModelLoadError as exc:
            if self.metrics is not None:
                self.metrics.model_load_failures.labels(alias).inc()
            keep = f"; still serving version {current.version}" if current else ""
            message = f"{alias} -> version {version} failed to load: {exc}{keep}"
            if self._failing.get(alias) != version:
                log.error(message)
                self._failing[alias] = version
            else:
                log.warning(message)
            self.last_error[alias] = message
            return current
        self._failing.pop(alias, None)
        self.last_error.pop(alias, None)
        if self.metrics is not None:
            self.metrics.model_loads.labels(alias).inc()
        log.info(
            "loaded %s version %s (%s) for alias %s%s",
            self.model_name,
            served.version,
            served.label,
            alias,
            " (direct predict: checked equal to the estimator's)" if served.direct else "",
        )
        return served

    def _weight_for(self, candidate_version: str | None) -> float:
        stored = self._registry_weight
        if (
            stored is not None
            and candidate_version is not None
            and stored[1] == str(candidate_version)
        ):
            return stored[0]
        return self.default_canary_weight

    def _swap(self, new: Snapshot) -> None:
        old = self.state
        self.state = new  # the atomic swap: one reference assignment
        if new.ready:
            self.ready_event.set()
        if self.metrics is not None:
            m = self.metrics
            m.model_ready.set(1 if new.ready else 0)
            m.canary_weight.set(new.canary_weight if new.candidate is not None else 0.0)
            for alias, before, after in (
                (self.champion_alias, old.champion, new.champion),
                (self.candidate_alias, old.candidate, new.candidate),
            ):
                if before is not None and before is not after:
                    m.model_info.labels(alias, before.version, before.label).set(0)
                if after is not None:
                    m.model_info.labels(alias, after.version, after.label).set(1)
        if new.champion is not old.champion and new.champion is not None:
            previous = old.champion.label if old.champion else "nothing"
            log.info(
                "champion swapped: %s -> %s (version %s)",
                previous,
                new.champion.label,
                new.champion.version,
            )
        if self.on_swap is not None and (
            new.champion is not old.champion or new.candidate is not old.candidate
        ):
            self.on_swap()

    def _note_error(self, key: str, message: str) -> None:
        if self.last_error.get(key) != message:
            log.warning(message)
        self.last_error[key] = message

    # -- rollout control -----------------------------------------------------------------------
    def set_canary_weight(self, weight: float) -> Snapshot:
        """Store the canary weight for the current candidate on the registered model and apply
        it here at once (other workers and replicas follow at their next poll)."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError("weight must lie in [0, 1]")
        with self._lock:
            version = self._candidate_version()
            if version is None:
                if weight > 0:
                    raise LookupError(
                        f"{self.model_name} has no '{self.candidate_alias}' version to send "
                        "canary traffic to (or it is the champion already)"
                    )
            else:
                self.client.set_registered_model_tag(
                    self.model_name, CANARY_TAG, json.dumps({"weight": weight, "version": version})
                )
                self._registry_weight = (weight, version)
            self._poll()
            return self.state

    def _candidate_version(self) -> str | None:
        registered = self.client.get_registered_model(self.model_name)
        aliases = dict(getattr(registered, "aliases", {}) or {})
        candidate = aliases.get(self.candidate_alias)
        if candidate is None or str(candidate) == str(aliases.get(self.champion_alias)):
            return None
        return str(candidate)

    # -- watcher -------------------------------------------------------------------------------
    def start(self) -> None:
        """Load at once (in the background) and keep watching the registry."""
        self._thread = threading.Thread(
            target=self._watch, name="model-registry-watcher", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        """Poll now instead of at the next interval."""
        self._wake.set()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the watcher must survive anything
                log.exception("registry poll failed")
            delay = self.poll_seconds if self.state.ready else min(self.poll_seconds, 2.0)
            self._wake.wait(delay)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        # The boot thread may have created the watcher without starting it yet.
        if self._thread is not None and self._thread.ident is not None:
            self._thread.join(timeout=5)
