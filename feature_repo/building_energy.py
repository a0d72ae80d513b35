"""Feast definitions of the building energy example: Entity -> Source -> FeatureView -> Service.

The source path is relative: Feast resolves it against the store's ``repo_path``, which kubeloop
points at the work folder (``<work_dir>/feast``), so the same definitions serve a laptop and a
cluster.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

from feature_repo.engineering import FEATURES

OWNER = "ml-platform@kubeloop.dev"

# A building with a smart meter; readings are keyed by its id.
building = Entity(
    name="building",
    join_keys=["building_id"],
    value_type=ValueType.INT64,
    description="A metered building.",
    tags={"owner": OWNER},
)

# Written by the pipeline's features step (feature_repo.engineering.building_features).
building_readings_source = FileSource(
    name="building_readings",
    path="offline/building_energy/building_features.parquet",
    timestamp_field="event_timestamp",
    description="Engineered features per meter reading.",
    tags={"owner": OWNER},
)

# Features of the latest reading of each building; readings older than a week are stale.
building_readings = FeatureView(
    name="building_readings",
    entities=[building],
    ttl=timedelta(days=7),
    schema=[Field(name=name, dtype=Float64) for name in FEATURES],
    online=True,
    source=building_readings_source,
    tags={"owner": OWNER, "team": "energy"},
)

# What the energy model consumes, in model order.
building_energy_v1 = FeatureService(
    name="building_energy_v1",
    features=[building_readings],
    description="Inputs of the building energy model.",
    tags={"owner": OWNER},
)
