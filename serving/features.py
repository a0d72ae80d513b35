"""The server's online features: the layout of the spec's feature service, its reader, timing
and errors, and feature matrices in a model's order.

The layout comes from the Feast registry when the server starts (``Runtime.from_settings``
opens it with ``serving.feature_layout.read_layout`` and ``serving.online_lookup.make_lookup``),
and again, in the background, while that fails. Lookups never block the event loop
(``serving.online_lookup``); the lookup metric is the duration of the store read that served
the request, waiting for the event loop is in the request latency.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.errors import EntityNotFound, InvalidField, Unavailable
from serving.feature_layout import EntityRow, FeatureLayout, parse_entity_id
from serving.online_lookup import OnlineLookup

log = logging.getLogger(__name__)


class OnlineFeatures:
    """The server's feature lookups: the layout, its reader, timing and errors.

    ``opener()`` returns ``(layout, lookup)``; it runs at start-up and, while it fails, again
    at most every ``retry_seconds`` when a request needs features.
    """

    def __init__(self, opener: Any, metrics: Any = None, retry_seconds: float = 5.0):
        self._opener = opener
        self.metrics = metrics
        self.retry_seconds = retry_seconds
        self.lookup: OnlineLookup | None = None
        self.error: str | None = "not opened yet"
        self._last_attempt = 0.0
        self._opening = threading.Lock()
        self._columns: dict[tuple[str, ...], np.ndarray] = {}

    @property
    def layout(self) -> FeatureLayout | None:
        return self.lookup.layout if self.lookup else None

    def open(self) -> bool:
        """Read the layout and build the reader (blocking: start-up or a worker thread)."""
        if not self._opening.acquire(blocking=False):
            return self.lookup is not None
        try:
            self._last_attempt = time.monotonic()
            layout, lookup = self._opener()
            self.lookup, self.error = lookup, None
            if self.metrics is not None:  # at 0 from the start: rate() sees the first failure
                self.metrics.lookup_failures.labels(lookup.backend)
            log.info(
                "online features: %s backend, %d features of %d view(s), entity key %s",
                lookup.backend,
                len(layout.names),
                len(layout.views),
                layout.join_key,
            )
            return True
        except Exception as exc:  # noqa: BLE001 - reported on lookups and readiness
            self.error = f"{exc.__class__.__name__}: {exc}"
            log.warning("online feature store not available: %s", self.error)
            return False
        finally:
            self._opening.release()

    def check(self, features: Sequence[str]) -> str | None:
        """Why a model with these features could not be served from the store (None: fine)."""
        layout = self.layout
        if layout is None:
            return None
        missing = layout.missing(features)
        if missing:
            return (
                f"the model needs features the feature service lacks: {missing}; add them "
                "to the feature service or retrain on it"
            )
        return None

    def _require(self) -> OnlineLookup:
        if self.lookup is None:
            if time.monotonic() - self._last_attempt > self.retry_seconds:
                self._last_attempt = time.monotonic()
                threading.Thread(target=self.open, daemon=True).start()
            raise Unavailable(
                f"the online feature store is not available ({self.error}); send "
                "explicit features or retry later"
            )
        return self.lookup

    def parse_entity(self, raw: Any, field: str) -> int | str:
        return parse_entity_id(raw, self._require().layout.value_type, field)

    async def read(self, entities: Sequence[int | str]) -> list[EntityRow | None]:
        lookup = self._require()
        try:
            rows, seconds = await lookup.read(entities)
        except Exception as exc:  # reported to every waiting request
            if self.metrics is not None:
                self.metrics.lookup_failures.labels(lookup.backend).inc()
            raise Unavailable(
                f"online feature lookup failed ({exc.__class__.__name__}: {exc}); "
                "retry later or send explicit features"
            ) from exc
        if self.metrics is not None:
            self.metrics.lookup_duration.labels(lookup.backend).observe(seconds)
        return rows

    async def matrix(
        self, entities: Sequence[int | str], names: tuple[str, ...], fields: Sequence[str]
    ) -> np.ndarray:
        """Features of ``entities`` as a float64 matrix with columns in ``names`` order.

        Raises EntityNotFound naming the first unknown entity (``fields`` name them).
        """
        unique = list(dict.fromkeys(entities))
        rows = await self.read(unique)
        lookup = self._require()
        columns = self._columns.get(names)
        if columns is None:
            index = {n: i for i, n in enumerate(lookup.layout.names)}
            missing = [n for n in names if n not in index]
            if missing:
                raise Unavailable(f"the feature service does not provide {missing}")
            columns = self._columns[names] = np.array([index[n] for n in names])
        by_entity = {}
        for entity, row in zip(unique, rows, strict=True):
            if row is None:
                field = fields[list(entities).index(entity)]
                raise not_found(entity, lookup.layout.join_key, field)
            by_entity[entity] = row.values
        table = np.array([by_entity[e] for e in entities], dtype=np.float64)
        return table[:, columns]

    async def features_of(self, raw: Any) -> dict[str, Any]:
        """Every feature of one entity (the features API). A path names a resource: an id
        that cannot be of the join key's type names no entity, so it is not found (404)."""
        try:
            entity = self.parse_entity(raw, "entity_id")
        except InvalidField as exc:
            raise EntityNotFound(
                f"no entity {raw!r} ({exc.message.removeprefix('entity_id ')})", field="entity_id"
            ) from None
        lookup = self._require()
        [row] = await self.read([entity])
        if row is None:
            raise not_found(entity, lookup.layout.join_key, "entity_id")
        return {
            "entity_id": entity,
            "join_key": lookup.layout.join_key,
            "event_timestamp": row.event_time.isoformat() if row.event_time else None,
            "features": {
                n: (None if math.isnan(v) else v)
                for n, v in zip(lookup.layout.names, row.values, strict=True)
            },
        }

    async def close(self) -> None:
        if self.lookup is not None:
            await self.lookup.close()


def not_found(entity: Any, join_key: str, field: str) -> EntityNotFound:
    """The 404 for an entity without online features, with the two usual causes: materialization
    loads only the rows within the features' TTL of the newest data, so an entity last seen
    before that has none, however often ``kubeloop materialize`` runs."""
    return EntityNotFound(
        f"entity {entity!r} has no features in the online store ({join_key}): an unknown id, "
        "or its newest row is older than the features' TTL (features.ttl_days) before the "
        "newest data, which materialization leaves out",
        field=field,
    )
