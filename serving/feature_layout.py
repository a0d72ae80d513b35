"""Where a feature service's features live in the online store, and Feast's encodings of them.

The layout (entity join key and type, views, feature names) is read from the Feast registry for
the spec's feature service; the lookups (``serving.online_lookup``, ``serving.redis_lookup``)
read rows in its order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from serving.errors import InvalidField

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


_INTEGER_ID = re.compile(r"-?[0-9]{1,19}")
_INTEGER_BOUNDS = {"INT64": 2**63, "INT32": 2**31}


def parse_entity_id(raw: Any, value_type: Any, field: str) -> int | str:
    """A request's entity id as the join key's type (ints may arrive as digit strings).

    ``value_type`` is a ``feast.ValueType`` or its name. An id the key's type cannot hold is
    the caller's error (422), never a lookup failure a client would retry."""
    kind = getattr(value_type, "name", value_type)
    bound = _INTEGER_BOUNDS.get(kind)
    if bound is not None:
        value = _integer(raw)
        if value is not None and -bound <= value < bound:
            return value
        raise InvalidField(f"{field} must be an integer id ({kind}), got {raw!r}", field=field)
    if type(raw) is str and 0 < len(raw) <= 256:
        return raw
    if type(raw) is int:
        return str(raw)
    raise InvalidField(
        f"{field} must be a string id of at most 256 characters, got {raw!r}", field=field
    )


def _integer(raw: Any) -> int | None:
    if type(raw) is int:
        return raw
    if type(raw) is float and raw.is_integer():
        return int(raw)  # JSON Schema's integer: 7.0 is one
    if type(raw) is str and _INTEGER_ID.fullmatch(raw):
        return int(raw)
    return None


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
