"""Online feature lookups for entity ids, straight into arrays in the model's feature order.

Feast's SDK (``FeatureStore.get_online_features``) costs milliseconds per call in Python, so
the server reads the online store more directly and keeps Feast's own encodings:

* ``RedisLookup`` (``KUBELOOP_FEAST_ONLINE_STORE=redis``): pipelined ``HMGET``s with Feast's
  entity-key serialization (``serialize_entity_key`` + project), field hashing
  (``_mmh3("<view>:<feature>")``) and stored ``ValueProto`` values. A test checks it against
  ``get_online_features``.
* ``OnlineStoreLookup`` (any other online store, SQLite by default): the online store plugin's
  own ``online_read``.

Both run on one dedicated thread, one read at a time: the requests that need features while a
read is under way are served together by the next one (one round trip for all of them), and
the event loop never waits on the store. The lookup metric is the duration of the store read
that served the request; waiting for the event loop is in the request latency.

The layout (entity join key and type, views, feature names) is read from the Feast registry
for the spec's feature service when the server starts, and again if that failed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from serving.errors import EntityNotFound, InvalidField, Unavailable

log = logging.getLogger(__name__)

NAN = float("nan")
_NUMERIC = {"double_val", "float_val", "int64_val", "int32_val", "bool_val", "unix_timestamp_val"}


@dataclass(frozen=True)
class FeatureLayout:
    """Where the features of one feature service live in the online store."""

    project: str
    join_key: str
    value_type: Any  # feast.ValueType of the join key
    views: tuple[tuple[str, tuple[str, ...]], ...]  # (online view name, feature names)
    serialization_version: int
    view_objects: tuple[Any, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for _, names in self.views for name in names)

    def missing(self, wanted: Sequence[str]) -> list[str]:
        have = set(self.names)
        return [name for name in wanted if name not in have]


def read_layout(store: Any, service_name: str) -> FeatureLayout:
    """The layout of a feature service, from the Feast registry."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    service = store.get_feature_service(service_name)
    versioning = bool(
        getattr(store.config.registry, "enable_online_feature_view_versioning", False)
    )
    views: list[tuple[str, tuple[str, ...]]] = []
    objects: list[Any] = []
    join_keys: list[str] = []
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        views.append(
            (compute_versioned_name(view, versioning), tuple(f.name for f in projection.features))
        )
        objects.append(view)
        join_keys.extend(col.name for col in view.entity_columns)
    keys = sorted(set(join_keys))
    if len(keys) != 1:
        raise ValueError(
            f"feature service {service_name} must have exactly one entity join key "
            f"to be looked up by entity id; it has {keys}"
        )
    value_type = next(e.value_type for e in store.list_entities() if e.join_key == keys[0])
    return FeatureLayout(
        project=store.config.project,
        join_key=keys[0],
        value_type=value_type,
        views=tuple(views),
        serialization_version=store.config.entity_key_serialization_version,
        view_objects=tuple(objects),
    )


def parse_entity_id(raw: Any, value_type: Any, field: str) -> int | str:
    """A request's entity id as the join key's type (ints may arrive as digit strings).

    ``value_type`` is a ``feast.ValueType`` or its name."""
    if getattr(value_type, "name", value_type) in ("INT64", "INT32"):
        if type(raw) is int:
            return raw
        if type(raw) is str and raw.lstrip("-").isdigit() and len(raw) < 20:
            return int(raw)
        raise InvalidField(f"{field} must be an integer id, got {raw!r}", field=field)
    if type(raw) is str and 0 < len(raw) <= 256:
        return raw
    if type(raw) is int:
        return str(raw)
    raise InvalidField(
        f"{field} must be a string id of at most 256 characters, got {raw!r}", field=field
    )


def entity_key(layout: FeatureLayout, value: int | str):
    """Feast's ``EntityKey`` proto of one entity."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    kind = getattr(layout.value_type, "name", layout.value_type)
    if kind == "INT64":
        proto = Value(int64_val=int(value))
    elif kind == "INT32":
        proto = Value(int32_val=int(value))
    else:
        proto = Value(string_val=str(value))
    return EntityKey(join_keys=[layout.join_key], entity_values=[proto])


def proto_value(value: Any) -> float:
    """A Feast ``ValueProto`` as a float (NaN when unset or not numeric)."""
    if value is None:
        return NAN
    kind = value.WhichOneof("val")
    if kind is None or kind not in _NUMERIC:
        return NAN
    return float(getattr(value, kind))


@dataclass
class EntityRow:
    """One entity's features in layout order, and when they were computed."""

    values: list[float]
    stamp: Any = None  # a datetime, or Feast's serialized Timestamp proto (parsed on demand)

    @property
    def event_time(self) -> datetime | None:
        if isinstance(self.stamp, bytes):
            from google.protobuf.timestamp_pb2 import Timestamp

            proto = Timestamp.FromString(self.stamp)
            return datetime.fromtimestamp(proto.seconds + proto.nanos / 1e9, UTC)
        return self.stamp


class OnlineLookup(ABC):
    """Reads features of entities from an online store, in ``layout.names`` order.

    ``read_sync`` is the store call. ``read`` batches the requests of the event loop: one
    ``read_sync`` at a time serves every request that arrived since the last one (one
    pipelined round trip for all of them), and returns the rows with the duration of the read.

    ``inline`` stores (Redis: a round trip of ~0.1-0.3 ms) are read on the event loop thread,
    once per loop iteration: a thread would wait for the GIL behind the busy loop (up to the
    5 ms switch interval per hand-over), which made lookups slower than the store. The socket
    timeout bounds the wait; after a timeout (a hung store) the store is not asked again for
    ``backoff`` seconds and requests fail fast with 503. Other stores (SQLite files) are read
    on one dedicated thread.
    """

    backend = "abstract"
    inline = False
    backoff = 1.0

    def __init__(self, layout: FeatureLayout):
        self.layout = layout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-lookup")
        self._pending: list[tuple[Sequence[int | str], asyncio.Future]] = []
        self._busy = False
        self._down_until = 0.0
        self._down_error: BaseException | None = None

    @abstractmethod
    def read_sync(self, entities: Sequence[int | str]) -> list[EntityRow | None]:
        """One row per entity (None: not in the store), blocking."""

    def _timed(self, entities: list[int | str]) -> tuple[list[EntityRow | None], float]:
        started = time.perf_counter()
        rows = self.read_sync(entities)
        return rows, time.perf_counter() - started

    async def read(self, entities: Sequence[int | str]) -> tuple[list[EntityRow | None], float]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((entities, future))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._busy = False
            return
        unique = list(dict.fromkeys(e for entities, _ in batch for e in entities))
        loop = asyncio.get_running_loop()
        if not self.inline:
            done = loop.run_in_executor(self._executor, self._timed, unique)
            done.add_done_callback(lambda result: self._resolve(batch, unique, result))
            return
        outcome: asyncio.Future = loop.create_future()
        if time.monotonic() < self._down_until:
            outcome.set_exception(self._down_error or ConnectionError("store unavailable"))
        else:
            try:
                outcome.set_result(self._timed(unique))
            except Exception as exc:  # noqa: BLE001 - reported to every waiting request
                if isinstance(exc, TimeoutError):  # a hung store: do not block every tick
                    self._down_until = time.monotonic() + self.backoff
                    self._down_error = exc
                outcome.set_exception(exc)
        self._resolve(batch, unique, outcome)

    def _resolve(self, batch, unique: list[int | str], result: asyncio.Future) -> None:
        error = result.exception()
        if error is None:
            rows, seconds = result.result()
            found = dict(zip(unique, rows, strict=True))
        for entities, future in batch:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(([found[e] for e in entities], seconds))
        self._dispatch()  # what arrived meanwhile goes next, as one batch

    async def close(self) -> None:
        self._executor.shutdown(wait=False)


class RedisLookup(OnlineLookup):
    """Direct, pipelined ``HMGET``s of Feast's Redis layout (keys and field hashes by Feast).

    The commands of an entity are encoded once (RESP) and cached; a read is one ``sendall``
    and hiredis parsing of the replies on a plain socket. Float64 values take a fast path
    (Feast stores them as ``ValueProto`` ``double_val``: tag 0x29 then 8 bytes); anything else
    goes through the proto. The test suite checks the rows against Feast's SDK.
    """

    backend = "redis"
    inline = True
    SUPPORTED = frozenset({"db", "password", "username"})

    def __init__(self, layout: FeatureLayout, connection_string: str, timeout: float = 1.0):
        super().__init__(layout)
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import RedisOnlineStore

        nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
        unsupported = set(params) - self.SUPPORTED
        if len(nodes) != 1 or unsupported:
            raise ValueError(
                f"the direct Redis reader supports one host and "
                f"{sorted(self.SUPPORTED)}; got {connection_string!r}"
            )
        self._connection = _RespConnection(
            nodes[0]["host"],
            int(nodes[0]["port"]),
            timeout,
            **{k: str(v) for k, v in params.items()},
        )
        self._suffixes = []
        for view, names in layout.views:
            fields = [_mmh3(f"{view}:{name}") for name in names] + [f"_ts:{view}".encode()]
            self._suffixes.append((len(fields) + 2, b"".join(_bulk(f) for f in fields)))
        self._project = layout.project.encode()
        self._commands: dict[int | str, bytes] = {}

    def redis_key(self, entity: int | str) -> bytes:
        """Feast's Redis key of an entity: serialized entity key + project."""
        from feast.infra.key_encoding_utils import serialize_entity_key

        return (
            serialize_entity_key(entity_key(self.layout, entity), self.layout.serialization_version)
            + self._project
        )

    def _command(self, entity: int | str) -> bytes:
        command = self._commands.get(entity)
        if command is None:
            if len(self._commands) > 200_000:
                self._commands.clear()
            key = _bulk(self.redis_key(entity))
            command = self._commands[entity] = b"".join(
                b"*%d\r\n$5\r\nHMGET\r\n%s%s" % (count, key, suffix)
                for count, suffix in self._suffixes
            )
        return command

    def read_sync(self, entities: Sequence[int | str]) -> list[EntityRow | None]:
        from feast.protos.feast.types.Value_pb2 import Value

        payload = b"".join([self._command(e) for e in entities])
        n_views = len(self._suffixes)
        replies = self._connection.execute(payload, len(entities) * n_views)
        unpack, nan, parse = struct.unpack_from, NAN, Value.FromString

        def value(raw: bytes | None) -> float:
            if raw is None:
                return nan
            if len(raw) == 9 and raw[0] == 0x29:  # double_val
                return unpack("<d", raw, 1)[0]
            return proto_value(parse(raw))

        rows: list[EntityRow | None] = []
        for i in range(len(entities)):
            values: list[float] = []
            stamp = None
            for reply in replies[i * n_views : (i + 1) * n_views]:
                if reply[-1] is not None:
                    stamp = reply[-1]
                values.extend([value(raw) for raw in reply[:-1]])
            rows.append(None if stamp is None else EntityRow(values, stamp))
        return rows

    async def close(self) -> None:
        await super().close()
        self._connection.close()


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


class _RespConnection:
    """One Redis connection speaking RESP over a plain socket, parsed by hiredis."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        db: str = "0",
        password: str | None = None,
        username: str | None = None,
    ):
        self.address = (host, port)
        self.timeout = timeout
        self.setup: list[list[bytes]] = []
        if password:
            self.setup.append(
                [b"AUTH", *([username.encode()] if username else []), password.encode()]
            )
        if str(db) != "0":
            self.setup.append([b"SELECT", str(db).encode()])
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        if self.setup:
            payload = b"".join(
                b"*%d\r\n%s" % (len(c), b"".join(_bulk(p) for p in c)) for c in self.setup
            )
            self._exchange(sock, payload, len(self.setup))
        return sock

    def execute(self, payload: bytes, replies: int) -> list[Any]:
        sock = self._sock or self._connect()
        try:
            return self._exchange(sock, payload, replies)
        except BaseException:
            self.close()  # a half-read connection is never reused
            raise

    @staticmethod
    def _exchange(sock: socket.socket, payload: bytes, replies: int) -> list[Any]:
        import hiredis

        sock.sendall(payload)
        reader = hiredis.Reader()
        out: list[Any] = []
        while len(out) < replies:
            data = sock.recv(262_144)
            if not data:
                raise ConnectionError("Redis closed the connection")
            reader.feed(data)
            reply = reader.gets()
            while reply is not False:
                if isinstance(reply, Exception):
                    raise ConnectionError(f"Redis: {reply}")
                out.append(reply)
                reply = reader.gets()
        return out

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class OnlineStoreLookup(OnlineLookup):
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
        try:
            return RedisLookup(layout, redis_url)
        except ValueError as exc:
            log.warning("%s: reading Redis through Feast's own online store instead", exc)
    return OnlineStoreLookup(layout, store)


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
                raise EntityNotFound(
                    f"entity {entity!r} has no features in the online store "
                    f"({lookup.layout.join_key}); check the id or materialize it",
                    field=field,
                )
            by_entity[entity] = row.values
        table = np.array([by_entity[e] for e in entities], dtype=np.float64)
        return table[:, columns]

    async def features_of(self, raw: Any) -> dict[str, Any]:
        """Every feature of one entity (the features API)."""
        entity = self.parse_entity(raw, "entity_id")
        lookup = self._require()
        [row] = await self.read([entity])
        if row is None:
            raise EntityNotFound(
                f"entity {entity!r} has no features in the online store", field="entity_id"
            )
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
