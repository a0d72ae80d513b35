"""Reading entities' features from an online store without blocking the event loop.

``OnlineLookup.read`` batches the requests of the event loop: one store read at a time serves
every request that arrived while the previous one ran (one round trip for all of them), and
returns the rows with the duration of the read. A read that times out (a hung store) makes the
store fail fast for ``backoff`` seconds instead of holding every request for the timeout.

``RedisLookup`` (``serving.redis_lookup``) reads Redis asynchronously; ``OnlineStoreLookup``
reads any other Feast online store (SQLite by default) through its plugin's ``online_read`` on
one dedicated thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from serving.feature_layout import EntityRow, FeatureLayout, entity_key, proto_value

log = logging.getLogger(__name__)

Pending = tuple[Sequence[int | str], asyncio.Future]


class OnlineLookup(ABC):
    """Reads features of entities from an online store, in ``layout.names`` order."""

    backend = "abstract"
    backoff = 1.0
    timeouts: tuple[type[BaseException], ...] = (TimeoutError,)  # what a hung store raises

    def __init__(self, layout: FeatureLayout):
        self.layout = layout
        self._pending: list[Pending] = []
        self._reader: asyncio.Task | None = None
        self._down_until = 0.0
        self._down_error: BaseException | None = None

    @abstractmethod
    async def read_rows(self, entities: Sequence[int | str]) -> list[EntityRow | None]:
        """One store read: a row per entity (None: not in the store)."""

    async def read(self, entities: Sequence[int | str]) -> tuple[list[EntityRow | None], float]:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((entities, future))
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read_pending())
        return await future

    async def _read_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._serve(batch)
        finally:
            self._reader = None

    async def _serve(self, batch: list[Pending]) -> None:
        unique = list(dict.fromkeys(e for entities, _ in batch for e in entities))
        try:
            if time.monotonic() < self._down_until:
                raise self._down_error or ConnectionError("store unavailable")
            started = time.perf_counter()
            rows = await self.read_rows(unique)
            seconds = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - reported to every waiting request
            if isinstance(exc, self.timeouts):  # a hung store: fail fast for a while
                self._down_until = time.monotonic() + self.backoff
                self._down_error = exc
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        found = dict(zip(unique, rows, strict=True))
        for entities, future in batch:
            if not future.done():
                future.set_result(([found[e] for e in entities], seconds))

    @abstractmethod
    async def close(self) -> None:
        """Release the store's connections."""


class ThreadedLookup(OnlineLookup):
    """A store whose client blocks: read on one dedicated thread, one read at a time."""

    def __init__(self, layout: FeatureLayout):
        super().__init__(layout)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-lookup")

    @abstractmethod
    def read_sync(self, entities: Sequence[int | str]) -> list[EntityRow | None]:
        """One row per entity (None: not in the store), blocking."""

    async def read_rows(self, entities: Sequence[int | str]) -> list[EntityRow | None]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.read_sync, entities)

    async def close(self) -> None:
        self._executor.shutdown(wait=False)


class OnlineStoreLookup(ThreadedLookup):
    """Any Feast online store through its plugin's own ``online_read``."""

    backend = "feast"

    def __init__(self, layout: FeatureLayout, store: Any):
        super().__init__(layout)
        from feast.infra.online_stores.helpers import get_online_store_from_config

        self._config = store.config
        self._online = get_online_store_from_config(store.config.online_store)

    def read_sync(self, entities: Sequence[int | str]) -> list[EntityRow | None]:
        keys = [entity_key(self.layout, e) for e in entities]
        values: list[list[float]] = [[] for _ in entities]
        times: list[datetime | None] = [None] * len(entities)
        for view, (_, names) in zip(self.layout.view_objects, self.layout.views, strict=True):
            read = self._online.online_read(self._config, view, keys, list(names))
            for i, (ts, found) in enumerate(read):
                found = found or {}
                values[i].extend(proto_value(found.get(name)) for name in names)
                if ts is not None:
                    times[i] = ts
        return [
            EntityRow(v, t) if t is not None or any(not math.isnan(x) for x in v) else None
            for v, t in zip(values, times, strict=True)
        ]


def make_lookup(
    store: Any, layout: FeatureLayout, online_store: str, redis_url: str
) -> OnlineLookup:
    if online_store == "redis":
        from serving.redis_lookup import RedisLookup

        try:
            return RedisLookup(layout, redis_url)
        except ValueError as exc:
            log.warning("%s: reading Redis through Feast's own online store instead", exc)
    return OnlineStoreLookup(layout, store)
