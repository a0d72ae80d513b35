"""Request bodies to feature matrices: strict, and cheap on the valid path.

No pydantic model per record and no pandas. The common batch, every record exactly
``{"features": {every feature}}``, is decoded and type-checked in one pass by msgspec against a
struct of the model's features (``parse_predict``), and its values go straight into a float64
array. Anything else (entity ids, keys, a table) and anything wrong goes through orjson and the
checks below, which name the bad field in the 422 (``records[3].features.humidity_pct``).

A record is ``{"entity_id": 1001}`` (features from the online store) or
``{"features": {"name": value, ...}}`` (every model feature, nothing else), optionally with
``"key"``, the sticky routing key for canary traffic (default: the entity id).

Batch clients may send a table instead, ``{"columns": [...], "rows": [[...], ...]}`` (every
model feature once, in any order; pandas' ``to_dict("split")`` minus the index), with optional
``"keys"`` and ``"entity_ids"`` lists, one per row: the same rows without a name per value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
import numpy as np
import orjson

from serving.errors import InvalidFeature, InvalidField, InvalidRequest, PayloadTooLarge

RECORD_FIELDS = frozenset({"entity_id", "features", "key"})
_NUMBER_TYPES = {float, int}


def loads(body: bytes) -> Any:
    """Parse JSON. orjson rejects NaN and Infinity; those are parsed again leniently so that the
    422 can name the feature rather than call the whole body invalid."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc


TABLE_FIELDS = frozenset({"columns", "rows", "keys", "entity_ids"})


@lru_cache(maxsize=8)
def _records_decoder(names: tuple[str, ...]) -> msgspec.json.Decoder:
    """A decoder of ``{"records": [{"features": {every one of names: number}}, ...]}`` and
    nothing else: floats or integers only (no bools, strings or nulls), no field missing or
    unknown, numbers within float64 (NaN and infinity are not JSON)."""
    fields = [f"f{i}" for i in range(len(names))]  # names need not be identifiers
    features = msgspec.defstruct(
        "Features",
        [(f, float) for f in fields],
        rename=dict(zip(fields, names, strict=True)),
        forbid_unknown_fields=True,
        gc=False,
    )
    record = msgspec.defstruct(
        "Record", [("features", features)], forbid_unknown_fields=True, gc=False
    )
    records: Any = list[record]  # type: ignore[valid-type]
    body = msgspec.defstruct("Body", [("records", records)], forbid_unknown_fields=True)
    return msgspec.json.Decoder(body)


_FEATURES_OF = attrgetter("features")


@lru_cache(maxsize=8)
def _table_decoder(width: int) -> msgspec.json.Decoder:
    """A decoder of a table body whose rows are ``width`` numbers each (floats or integers
    within float64; no bools, strings or nulls), with only the table's fields. The columns are
    checked against the model's features after decoding."""
    ids = list[str | int | None] | None
    body = msgspec.defstruct(
        "Table",
        [
            ("columns", list[str]),
            ("rows", list[tuple[(float,) * width]]),  # type: ignore[misc]
            ("keys", ids, None),
            ("entity_ids", ids, None),
        ],
        forbid_unknown_fields=True,
    )
    return msgspec.json.Decoder(body)


def parse_predict(body: bytes, names: tuple[str, ...], parse_entity, max_records: int) -> Batch:
    """A ``/predict`` body as a ``Batch``: the common shapes (records of explicit features, a
    table without bad cells) through the typed decoders (a third of orjson's time plus the
    checks below, measured in docs/benchmarks.md), everything else, errors included, through
    ``parse_body``. A decoder refuses a body of the other shape at its first key."""
    try:
        records = _records_decoder(names).decode(body).records
    except msgspec.MsgspecError:
        records = None
    k = len(names)
    if records and len(records) <= max_records:
        values = chain.from_iterable(map(msgspec.structs.astuple, map(_FEATURES_OF, records)))
        return _without_ids(np.fromiter(values, np.float64, len(records) * k).reshape(-1, k))
    if records is None:
        try:
            table = _table_decoder(k).decode(body)
        except msgspec.MsgspecError:
            table = None
        if table is not None:
            order = _column_order(tuple(table.columns), names)
            n = _row_count(table.rows, max_records)
            X = np.fromiter(chain.from_iterable(table.rows), np.float64, n * k).reshape(n, k)
            return _table_batch(X, order, table.keys, table.entity_ids)
    return parse_body(loads(body), names, parse_entity, max_records)


def parse_body(payload: Any, names: tuple[str, ...], parse_entity, max_records: int) -> Batch:
    """A predict body (records or a table) as a ``Batch`` for the model inputs ``names``."""
    if type(payload) is dict and "rows" in payload:
        return parse_table(payload, names, max_records)
    return parse_records(records_of(payload, max_records), names, parse_entity)


def parse_table(payload: dict[str, Any], names: tuple[str, ...], max_records: int) -> Batch:
    """``{"columns": [...], "rows": [[...], ...], "keys"?: [...], "entity_ids"?: [...]}``."""
    if not payload.keys() <= TABLE_FIELDS:
        name = sorted(payload.keys() - TABLE_FIELDS)[0]
        raise InvalidField(
            f"unknown field {name!r}; a table body holds columns, rows, keys and entity_ids",
            field=name,
        )
    columns, rows = payload.get("columns"), payload["rows"]
    if type(columns) is not list or not all(type(c) is str for c in columns):
        raise InvalidField('"columns" must be a list of feature names', field="columns")
    order = _column_order(tuple(columns), names)
    if type(rows) is not list:
        raise InvalidField('"rows" must be a non-empty list of rows', field="rows")
    _row_count(rows, max_records)
    if set(map(type, rows)) != {list} or set(map(len, rows)) != {len(columns)}:
        i = next(i for i, r in enumerate(rows) if type(r) is not list or len(r) != len(columns))
        raise InvalidField(
            f"rows[{i}] must be a list of {len(columns)} values (one per column)",
            field=f"rows[{i}]",
        )
    X = _matrix(rows, len(columns), lambda: _first_bad_cell(rows, columns))
    return _table_batch(X, order, payload.get("keys"), payload.get("entity_ids"))


@lru_cache(maxsize=64)
def _column_order(columns: tuple[str, ...], names: tuple[str, ...]) -> tuple[int, ...] | None:
    """Where each model feature is among a table's columns (None: in model order already);
    every feature exactly once. Cached: a client sends the same columns every time."""
    if len(set(columns)) != len(columns):
        duplicate = next(c for c in columns if columns.count(c) > 1)
        raise InvalidFeature(f"column {duplicate!r} appears twice", field=f"columns.{duplicate}")
    missing = [n for n in names if n not in columns]
    if missing:
        raise InvalidFeature(
            f"no column for feature {missing[0]!r}; the model needs every one "
            "of: " + ", ".join(names),
            field=f"columns.{missing[0]}",
        )
    if len(columns) != len(names):
        unknown = sorted(set(columns) - set(names))[0]
        raise InvalidFeature(
            f"unknown feature {unknown!r}; the model takes: " + ", ".join(names),
            field=f"columns.{unknown}",
        )
    order = tuple(columns.index(n) for n in names)
    return None if order == tuple(range(len(names))) else order


def _row_count(rows: list[Any], max_records: int) -> int:
    if not rows:
        raise InvalidField('"rows" must be a non-empty list of rows', field="rows")
    if len(rows) > max_records:
        raise PayloadTooLarge(
            f"{len(rows)} rows in one request; the limit is {max_records}: split the batch",
            field="rows",
        )
    return len(rows)


def _table_batch(
    X: np.ndarray, order: tuple[int, ...] | None, keys: list[Any] | None, entities: list[Any] | None
) -> Batch:
    """A table's matrix in model order, with its optional per-row keys and entity ids."""
    if order is not None:
        X = X[:, order]
    n = len(X)
    if keys is None and entities is None:
        return _without_ids(X)
    keys = _optional_list(keys, "keys", n)
    entities = _optional_list(entities, "entity_ids", n)
    entity_ids: list[int | str | None] = [None if e is None else str(e) for e in entities]
    routing: list[str | None] = [
        str(k) if k is not None else (None if e is None else str(e))
        for k, e in zip(keys, entity_ids, strict=True)
    ]
    return Batch(
        X=X,
        entity_positions=[],
        entity_ids=entity_ids,
        keys=routing,
        has_entity_ids=any(e is not None for e in entity_ids),
    )


def _without_ids(X: np.ndarray) -> Batch:
    """A batch of explicit features only: no entity ids, no routing keys."""
    nothing: list[Any] = [None] * len(X)
    return Batch(X, [], nothing, list(nothing), has_entity_ids=False)


def _optional_list(values: Any, name: str, n: int) -> list[Any]:
    if values is None:
        return [None] * n
    if (
        type(values) is not list
        or len(values) != n
        or not all(v is None or type(v) in (str, int) for v in values)
    ):
        raise InvalidField(
            f'"{name}" must be a list of {n} strings or integers (one per row)', field=name
        )
    return values


def _first_bad_cell(rows: list[list[Any]], columns: list[str]) -> InvalidFeature:
    for i, row in enumerate(rows):
        for column, value in zip(columns, row, strict=True):
            try:
                check_number(value, f"rows[{i}].{column}")
            except InvalidFeature as exc:
                return exc
    return InvalidFeature("a feature value is invalid", field="rows")


def records_of(payload: Any, max_records: int) -> list[Any]:
    """The ``records`` list of a predict body, within the batch limit."""
    if type(payload) is not dict:
        raise InvalidRequest('the body must be a JSON object like {"records": [...]}')
    if "records" not in payload:
        given = ", ".join(repr(k) for k in sorted(payload)) or "nothing"
        raise InvalidField(
            f'the body needs "records" (a list of records) or a table ("columns" and "rows"); '
            f"it has {given}",
            field="records",
        )
    records = payload["records"]
    if type(records) is not list:
        raise InvalidField('"records" must be a list of records', field="records")
    if not records:
        raise InvalidField('"records" is empty: send at least one record', field="records")
    if len(records) > max_records:
        raise PayloadTooLarge(
            f"{len(records)} records in one request; the limit is {max_records}: split the batch",
            field="records",
        )
    extra = payload.keys() - {"records"}
    if extra:
        name = sorted(extra)[0]
        raise InvalidField(f'unknown field {name!r}; the body holds only "records"', field=name)
    return records


@dataclass
class Batch:
    """A request's records, parsed."""

    X: np.ndarray  # rows in order; rows of entity records are filled by the lookup
    entity_positions: list[int]  # records given by entity id
    entity_ids: list[int | str | None]  # per record (None: explicit features without an id)
    keys: list[str | None]  # per record sticky routing key
    has_entity_ids: bool = True  # False: no record carries an entity id

    def __len__(self) -> int:
        return len(self.X)


def _getter(names: tuple[str, ...]):
    getter = itemgetter(*names)
    if len(names) == 1:
        return lambda d: (getter(d),)
    return getter


_GETTERS: dict[tuple[str, ...], Any] = {}


def parse_records(records: list[Any], names: tuple[str, ...], parse_entity) -> Batch:
    """Validate records against the model inputs ``names`` and build the feature matrix.

    ``parse_entity(raw, field)`` turns a raw entity id into the store's key type.
    """
    getter = _GETTERS.get(names)
    if getter is None:
        getter = _GETTERS[names] = _getter(names)
    n_features = len(names)
    rows: list[Any] = []
    explicit: list[int] = []
    entity_positions: list[int] = []
    entity_ids: list[int | str | None] = []
    keys: list[str | None] = []
    for i, record in enumerate(records):
        if type(record) is not dict:
            raise InvalidField(
                f'records[{i}] must be an object with "entity_id" or "features"',
                field=f"records[{i}]",
            )
        features = record.get("features")
        raw_entity = record.get("entity_id")
        if not record.keys() <= RECORD_FIELDS:
            name = sorted(record.keys() - RECORD_FIELDS)[0]
            raise InvalidField(
                f"records[{i}] has unknown field {name!r} (allowed: entity_id, features, key)",
                field=f"records[{i}].{name}",
            )
        if features is not None and raw_entity is not None:
            raise InvalidField(
                f'records[{i}] has both "entity_id" and "features": send one (an entity id '
                "reads the online store, features are used as given)",
                field=f"records[{i}].features",
            )
        entity = None if raw_entity is None else parse_entity(raw_entity, f"records[{i}].entity_id")
        entity_ids.append(entity)
        key = record.get("key")
        if key is not None and type(key) is not str:
            key = str(key)
        keys.append(key if key is not None else (None if entity is None else str(entity)))
        if features is None:
            if entity is None:
                raise InvalidField(
                    f'records[{i}] needs "entity_id" or "features"', field=f"records[{i}]"
                )
            entity_positions.append(i)
            rows.append(None)
            continue
        if type(features) is not dict:
            raise InvalidFeature(
                f"records[{i}].features must be an object of name: number",
                field=f"records[{i}].features",
            )
        try:
            row = getter(features)
        except KeyError:
            raise _feature_error(i, features, names) from None
        if len(features) != n_features:
            raise _feature_error(i, features, names)
        rows.append(row)
        explicit.append(i)
    X = np.empty((len(records), n_features), dtype=np.float64)
    if explicit:
        values = rows if not entity_positions else [rows[i] for i in explicit]
        block = _matrix(values, n_features, lambda: _first_bad_value(records, explicit, names))
        if entity_positions:
            X[explicit] = block
        else:
            X = block
    return Batch(
        X=X,
        entity_positions=entity_positions,
        entity_ids=entity_ids,
        keys=keys,
        has_entity_ids=any(e is not None for e in entity_ids),
    )


def _matrix(
    values: list[Any], n_columns: int, first_error: Callable[[], InvalidFeature]
) -> np.ndarray:
    """Feature rows as a float64 matrix: JSON numbers only (no bools, strings or nulls),
    finite; the first offender is named otherwise.

    numpy infers the array's type in one pass: strings, nulls, lists and huge integers give a
    non-numeric dtype. Only bools hide (numpy turns them into 0/1), so only values equal to 0
    or 1 have their Python type checked.
    """
    flat = list(chain.from_iterable(values))
    try:
        block = np.array(flat)
    except (ValueError, TypeError, OverflowError):
        raise first_error() from None
    if block.dtype.kind not in "fi" or block.ndim != 1:
        raise first_error()
    if block.dtype.kind == "i":
        block = block.astype(np.float64)
    suspects = np.flatnonzero((block == 0.0) | (block == 1.0))
    if suspects.size and bool in set(map(type, map(flat.__getitem__, suspects.tolist()))):
        raise first_error()
    if not np.isfinite(block).all():
        raise first_error()
    return block.reshape(len(values), n_columns)


def _feature_error(i: int, features: dict[str, Any], names: Sequence[str]) -> InvalidFeature:
    missing = [n for n in names if n not in features]
    unknown = sorted(set(features) - set(names))
    if missing:
        # Names sent beside the missing ones are often the same features spelled otherwise
        # (a column "mean radius" for the feature mean_radius): say so.
        sent = (
            f"; it has {len(unknown)} the model does not take ({unknown[0]!r}...)"
            if unknown
            else ""
        )
        return InvalidFeature(
            f"records[{i}].features lacks {missing[0]!r}"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + sent
            + "; the model needs every one of: "
            + ", ".join(names),
            field=f"records[{i}].features.{missing[0]}",
        )
    return InvalidFeature(
        f"records[{i}].features has unknown feature {unknown[0]!r}; the model "
        "takes: " + ", ".join(names),
        field=f"records[{i}].features.{unknown[0]}",
    )


def check_number(value: Any, field: str) -> float:
    """One feature value: a finite JSON number (not a bool, string or null)."""
    if type(value) not in _NUMBER_TYPES:
        got = "null" if value is None else f"{type(value).__name__} {value!r}"
        raise InvalidFeature(f"{field} must be a number, got {got}", field=field)
    try:
        number = float(value)
    except OverflowError:
        raise InvalidFeature(f"{field} is too large for a float64", field=field) from None
    if not math.isfinite(number):
        raise InvalidFeature(
            f"{field} must be finite, got {value!r} (NaN and infinity are "
            "refused: impute missing values before sending)",
            field=field,
        )
    return number


def _first_bad_value(
    records: list[Any], explicit: Sequence[int], names: Sequence[str]
) -> InvalidFeature:
    for i in explicit:
        features = records[i]["features"]
        for name in names:
            try:
                check_number(features[name], f"records[{i}].features.{name}")
            except InvalidFeature as exc:
                return exc
    return InvalidFeature("a feature value is invalid", field="records")


def dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
