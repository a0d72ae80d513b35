"""Features declared in the spec: the transform and the Feast definitions, generated.

For plain tabular data a user lists the model's features in ``features.declared`` (raw columns
and common encodings) and writes no Python. This module turns that list into the two things a
hand-written feature repository provides, the transform (raw rows -> feature rows) and the Feast
objects (Entity -> FileSource -> FeatureView -> FeatureService), so that after this point both
paths run the same code (``kubeloop.engineering.load_transform``,
``kubeloop.feature_store.definitions``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from kubeloop.spec import DeclaredFeature, ProjectSpec

OWNER = "kubeloop"


def _slug(value: str) -> str:
    """A category or column as part of a feature name (letters, digits, underscores)."""
    return re.sub(r"[^0-9a-zA-Z_]+", "_", str(value)).strip("_").lower() or "blank"


def names_of(feature: DeclaredFeature) -> list[str]:
    """The feature names one declaration makes, in model order."""
    if feature.encode == "one_hot":
        return [f"{_slug(feature.column)}_is_{_slug(c)}" for c in feature.categories or []]
    if feature.encode == "date_parts":
        return [f"{_slug(feature.column)}_{part}" for part in feature.parts or []]
    if feature.name:
        return [feature.name]
    if feature.encode == "log":
        return [f"log_{_slug(feature.column)}"]
    if feature.encode == "ratio":
        return [f"{_slug(feature.column)}_per_{_slug(feature.denominator or '')}"]
    return [feature.column if feature.column.isidentifier() else _slug(feature.column)]


def feature_names(spec: ProjectSpec) -> list[str]:
    """Every declared feature's name, in model order."""
    return [name for feature in spec.features.declared or [] for name in names_of(feature)]


def _numbers(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column, errors="coerce").astype("float64")


def _date_part(ts: pd.Series, part: str) -> pd.Series:
    hour = ts.dt.hour + ts.dt.minute / 60
    values = {
        "hour": lambda: hour,
        "hour_sin": lambda: np.sin(hour / 24 * 2 * np.pi),
        "hour_cos": lambda: np.cos(hour / 24 * 2 * np.pi),
        "dayofweek": lambda: ts.dt.dayofweek,
        "is_weekend": lambda: ts.dt.dayofweek >= 5,
        "month": lambda: ts.dt.month,
    }[part]()
    return values.astype("float64")


def _compute(feature: DeclaredFeature, raw: pd.DataFrame) -> dict[str, pd.Series]:
    column = raw[feature.column]
    names = names_of(feature)
    if feature.encode == "one_hot":
        text = column.astype("string")
        return {
            name: (text == category).fillna(False).astype("float64")
            for name, category in zip(names, feature.categories or [], strict=True)
        }
    if feature.encode == "date_parts":
        ts = pd.to_datetime(column, utc=True)
        return {
            name: _date_part(ts, part)
            for name, part in zip(names, feature.parts or [], strict=True)
        }
    values = _numbers(column)
    if feature.encode == "log":
        # log1p of negative values is undefined: they become missing, as a null would.
        values = np.log1p(values.where(values > -1))
    elif feature.encode == "ratio":
        denominator = _numbers(raw[feature.denominator or ""])
        values = values / denominator.where(denominator != 0)
    return {names[0]: values}


def transform(spec: ProjectSpec) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Raw rows -> one feature row per (entity, timestamp), the keys kept."""

    def declared_transform(raw: pd.DataFrame) -> pd.DataFrame:
        out: dict[str, Any] = {
            spec.entity_key: raw[spec.entity_key].to_numpy(),
            spec.timestamp: pd.to_datetime(raw[spec.timestamp], utc=True).to_numpy(),
        }
        for feature in spec.features.declared or []:
            out.update(_compute(feature, raw))
        return pd.DataFrame(out, index=raw.index)

    return declared_transform


def feast_objects(spec: ProjectSpec) -> list[Any]:
    """Entity, file source, feature view and feature service of the declared features.

    The source path is relative, as in a hand-written repository: ``definitions`` places it
    under the store's offline location.
    """
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64

    key_type = spec.data.columns[spec.entity_key].type
    entity = Entity(
        name=spec.entity_key,
        join_keys=[spec.entity_key],
        value_type=ValueType.INT64 if key_type == "int" else ValueType.STRING,
        description=f"The entity of {spec.name}, keyed by {spec.entity_key}.",
        tags={"owner": OWNER},
    )
    view_name = re.sub(r"[^0-9a-z_]", "_", spec.name.lower()) + "_features"
    source = FileSource(
        name=view_name,
        path=f"offline/{spec.name}/{view_name}.parquet",
        timestamp_field=spec.timestamp,
        description="Declared features per raw row, written by the features step.",
        tags={"owner": OWNER},
    )
    view = FeatureView(
        name=view_name,
        entities=[entity],
        ttl=timedelta(days=spec.features.ttl_days),
        schema=[Field(name=name, dtype=Float64) for name in feature_names(spec)],
        online=True,
        source=source,
        tags={"owner": OWNER, "generated": "spec"},
    )
    service = FeatureService(
        name=spec.features.service,
        features=[view],
        description=f"Inputs of the {spec.model_name} model, declared in its spec.",
        tags={"owner": OWNER},
    )
    return [entity, source, view, service]
