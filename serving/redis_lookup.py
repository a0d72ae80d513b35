"""Feature rows from Feast's Redis online store, read with ``redis.asyncio`` (hiredis parses).

Feast's SDK (``FeatureStore.get_online_features``) costs milliseconds per call in Python, so the
server reads Feast's Redis layout directly, with Feast's own encodings through public APIs:
keys are ``serialize_entity_key`` + project, fields are the murmur3 hashes of
``"<view>:<feature>"`` (the ``mmh3`` package, as Feast computes them) plus ``_ts:<view>``,
values are ``ValueProto``s. One read is one pipeline of ``HMGET``s (one per entity and view)
on the event loop, never blocking it; the integration tests check the rows against Feast's SDK.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import mmh3
import redis.asyncio
import redis.exceptions
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.Value_pb2 import Value
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from serving.feature_layout import NAN, EntityRow, FeatureLayout, entity_key, proto_value
from serving.online_lookup import OnlineLookup

SUPPORTED = frozenset({"db", "password", "username"})


def parse_connection_string(connection_string: str) -> tuple[str, int, dict[str, str]]:
    """Feast's ``host:port[,db=N][,password=...][,username=...]`` as (host, port, options).

    Raises ValueError for what this reader does not handle (several nodes, SSL, cluster
    options): the server then reads through Feast's own online store."""
    nodes, options = [], {}
    for part in connection_string.split(","):
        key, equals, value = part.partition("=")
        if equals:
            options[key.strip()] = value.strip()
        elif part.strip():
            nodes.append(part.strip())
    unsupported = set(options) - SUPPORTED
    if len(nodes) != 1 or unsupported:
        raise ValueError(
            f"the direct Redis reader supports one host and {sorted(SUPPORTED)}; "
            f"got {connection_string!r}"
        )
    host, _, port = nodes[0].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Redis address must be host:port; got {nodes[0]!r}")
    return host, int(port), options


def field_hash(view: str, feature: str) -> bytes:
    """Feast's Redis hash field of a feature: murmur3 (32-bit, unsigned), little-endian."""
    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


def feature_value(raw: bytes | None) -> float:
    """A stored ``ValueProto`` as a float. Float64 values take a fast path (Feast stores them
    as ``double_val``: tag 0x29 then 8 bytes); anything else goes through the proto."""
    if raw is None:
        return NAN
    if len(raw) == 9 and raw[0] == 0x29:
        return struct.unpack_from("<d", raw, 1)[0]
    return proto_value(Value.FromString(raw))


class RedisLookup(OnlineLookup):
    """Pipelined ``HMGET``s of Feast's Redis layout over one ``redis.asyncio`` connection."""

    backend = "redis"
    timeouts = (TimeoutError, redis.exceptions.TimeoutError)

    def __init__(self, layout: FeatureLayout, connection_string: str, timeout: float = 1.0):
        super().__init__(layout)
        host, port, options = parse_connection_string(connection_string)
        self._client = redis.asyncio.Redis(
            host=host,
            port=port,
            db=int(options.get("db", 0)),
            username=options.get("username"),
            password=options.get("password"),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            # No retries: a timed-out read fails its requests at once and the store is left
            # alone for a while (OnlineLookup.backoff); redis-py's default retries three times.
            retry=Retry(NoBackoff(), 0),
        )
        self._fields = [
            [field_hash(view, name) for name in names] + [f"_ts:{view}".encode()]
            for view, names in layout.views
        ]
        self._project = layout.project.encode()
        self._keys: dict[int | str, bytes] = {}

    def redis_key(self, entity: int | str) -> bytes:
        """Feast's Redis key of an entity: serialized entity key + project (cached)."""
        key = self._keys.get(entity)
        if key is None:
            if len(self._keys) > 200_000:
                self._keys.clear()
            key = self._keys[entity] = (
                serialize_entity_key(
                    entity_key(self.layout, entity), self.layout.serialization_version
                )
                + self._project
            )
        return key

    async def read_rows(self, entities: Sequence[int | str]) -> list[EntityRow | None]:
        pipeline = self._client.pipeline(transaction=False)
        for entity in entities:
            key = self.redis_key(entity)
            for fields in self._fields:
                pipeline.hmget(key, fields)  # type: ignore[arg-type]  # bytes keys are fine
        replies: list[Any] = await pipeline.execute()
        n_views = len(self._fields)
        rows: list[EntityRow | None] = []
        for i in range(len(entities)):
            values: list[float] = []
            stamp = None
            for reply in replies[i * n_views : (i + 1) * n_views]:
                if reply[-1] is not None:
                    stamp = reply[-1]
                values.extend([feature_value(raw) for raw in reply[:-1]])
            rows.append(None if stamp is None else EntityRow(values, stamp))
        return rows

    async def close(self) -> None:
        await self._client.aclose()
