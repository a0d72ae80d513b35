"""Feast definitions of the benchmark's entity lookups: scikit-learn's diabetes rows as patients.

Entity -> Source -> FeatureView -> FeatureService, like the bundled example; the benchmark
materializes them into Redis so ``/predict`` by entity id reads them online.
"""

from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
OWNER = "ml-platform@kubeloop.dev"

patient = Entity(
    name="patient",
    join_keys=["patient_id"],
    value_type=ValueType.INT64,
    description="A row of the diabetes data.",
    tags={"owner": OWNER},
)

patient_source = FileSource(
    name="diabetes_rows",
    path="offline/diabetes/diabetes.parquet",
    timestamp_field="event_timestamp",
    tags={"owner": OWNER},
)

patient_features = FeatureView(
    name="diabetes_features",
    entities=[patient],
    ttl=timedelta(days=3650),
    schema=[Field(name=name, dtype=Float64) for name in FEATURES],
    online=True,
    source=patient_source,
    tags={"owner": OWNER},
)

diabetes_v1 = FeatureService(name="diabetes_v1", features=[patient_features], tags={"owner": OWNER})


def transform(raw: pd.DataFrame) -> pd.DataFrame:
    """The rows are already features."""
    return raw[["patient_id", "event_timestamp", *FEATURES]].copy()
