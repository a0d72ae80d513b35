"""Feature engineering for the building energy example.

The only place raw readings become model features. The features step writes its output to the
Feast offline store and materializes it online, so training (point-in-time joins) and serving
(online lookups) read the very same values: no training/serving skew.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# Model input order. Feast feature view schema, serving arrays and monitoring all follow it.
FEATURES = [
    "log_floor_area",
    "building_age_years",
    "is_office",
    "is_retail",
    "outdoor_temp_c",
    "heating_degrees",
    "cooling_degrees",
    "humidity_pct",
    "occupancy_density",
    "hour_sin",
    "hour_cos",
    "is_weekend",
]


def building_features(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw meter readings -> one feature row per (building_id, event_timestamp)."""
    ts = pd.to_datetime(raw["event_timestamp"], utc=True)
    hour = ts.dt.hour + ts.dt.minute / 60
    area = raw["floor_area_m2"].astype("float64")
    temp = raw["outdoor_temp_c"].astype("float64")
    out = pd.DataFrame(
        {
            "building_id": raw["building_id"].astype("int64"),
            "event_timestamp": ts,
            "log_floor_area": np.log1p(area),
            "building_age_years": raw["building_age_years"].astype("float64"),
            "is_office": (raw["building_type"] == "office").astype("float64"),
            "is_retail": (raw["building_type"] == "retail").astype("float64"),
            "outdoor_temp_c": temp,
            "heating_degrees": np.maximum(0.0, 18.0 - temp),
            "cooling_degrees": np.maximum(0.0, temp - 24.0),
            "humidity_pct": raw["humidity_pct"].astype("float64"),
            "occupancy_density": raw["occupancy"].astype("float64") / area * 100.0,
            "hour_sin": np.sin(hour / 24 * 2 * np.pi),
            "hour_cos": np.cos(hour / 24 * 2 * np.pi),
            "is_weekend": (ts.dt.dayofweek >= 5).astype("float64"),
        }
    )
    return out
