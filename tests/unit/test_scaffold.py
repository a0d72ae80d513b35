"""`kubeloop init`: what it infers from a table, and the clear errors when it cannot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kubeloop.errors import SpecError
from kubeloop.scaffold import column_type, infer, quality_rule, write_project
from kubeloop.spec import MonitoringSpec, load_spec


def table(rows: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "shop_id": np.arange(rows),
            "day": pd.date_range("2026-01-01", periods=rows, freq="D").strftime("%Y-%m-%d"),
            "region": rng.choice(["north", "south", "east"], rows),
            "street": [f"street {i}" for i in range(rows)],  # too many categories
            "visitors": rng.integers(0, 500, rows),
            "rain_mm": np.where(rng.random(rows) < 0.1, np.nan, rng.random(rows) * 10),
            "sales": rng.random(rows) * 1000,
            "busy": rng.choice(["yes", "no"], rows),
        }
    )


def test_column_types_are_inferred() -> None:
    frame = table()
    assert {c: column_type(frame[c]) for c in frame} == {
        "shop_id": "int",
        "day": "datetime",
        "region": "string",
        "street": "string",
        "visitors": "int",
        "rain_mm": "float",
        "sales": "float",
        "busy": "string",
    }


def test_rules_hold_on_the_data_they_came_from_with_room_to_vary() -> None:
    rule = quality_rule(pd.Series([2.0, 4.0, None, 6.0]), "float")
    assert rule["min"] == 0.0 and rule["max"] == 8.0  # non-negative data stays non-negative
    assert rule["max_null_fraction"] == 0.5 and "nullable" not in rule
    assert quality_rule(pd.Series([-4.0, 4.0]), "float")["min"] == -8.0
    assert quality_rule(pd.Series(["a"]), "string") == {"type": "string", "nullable": False}


def test_a_numeric_target_is_regression_and_features_are_declared() -> None:
    inference = infer(table(), "shops", "shops.csv", "sales")
    spec = inference.spec
    assert (spec["task"], spec["entity_key"], spec["timestamp"]) == ("regression", "shop_id", "day")
    declared = spec["features"]["declared"]
    assert {"column": "region", "encode": "one_hot", "categories": ["east", "north", "south"]} in (
        declared
    )
    assert {"column": "visitors"} in declared and {"column": "rain_mm"} in declared
    assert not [d for d in declared if d["column"] in ("street", "shop_id", "day", "sales")]
    assert any("'street' has 300 distinct strings" in line for line in inference.check)
    assert spec["evaluation"]["primary_metric"] == "rmse"
    assert spec["model"]["estimator"]["class"].endswith("HistGradientBoostingRegressor")
    assert spec["monitoring"]["drift_share"] == MonitoringSpec().drift_share  # out to be tuned


def test_features_stay_fresh_over_the_tables_time_span() -> None:
    """Materialization loads the rows within the TTL of the newest one: with the default week,
    299 of these 300 daily shops could not be served by id."""
    assert infer(table(), "shops", "shops.csv", "sales").spec["features"]["ttl_days"] == 300
    week = infer(table(3), "shops", "shops.csv", "sales").spec["features"]
    assert week["ttl_days"] == 7  # never below the spec's default


def test_a_string_target_is_classification() -> None:
    spec = infer(table(), "shops", "shops.csv", "busy").spec
    assert spec["task"] == "classification" and spec["evaluation"]["primary_metric"] == "f1"
    assert spec["model"]["estimator"]["class"].endswith("HistGradientBoostingClassifier")


def test_integer_classes_get_no_range_and_renamed_features_are_listed() -> None:
    frame = table().rename(columns={"rain_mm": "rain mm"})
    frame["returned"] = np.arange(len(frame)) % 2
    inference = infer(frame, "shops", "shops.csv", "returned")
    assert inference.spec["task"] == "classification"
    assert inference.spec["data"]["columns"]["returned"] == {"type": "int", "nullable": False}
    assert "feature names (requests use them): 'rain mm' as rain_mm" in inference.inferred


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"target": "price"}, "--target: no column 'price'"),
        ({"entity": "nope"}, "--entity: no column 'nope'"),
        ({"task": "ranking"}, "--task: 'ranking' is neither"),
    ],
)
def test_wrong_options_name_the_option(changes: dict, message: str) -> None:
    options = {"target": "sales", **changes}
    with pytest.raises(SpecError, match=message):
        infer(table(), "shops", "shops.csv", **options)


def test_data_without_a_time_column_says_what_to_add() -> None:
    with pytest.raises(SpecError, match="needs a datetime column; name one with --timestamp"):
        infer(table().drop(columns=["day"]), "shops", "shops.csv", "sales")


def test_the_written_spec_loads_and_is_never_overwritten(tmp_path) -> None:
    data = tmp_path / "shops.csv"
    table().to_csv(data, index=False)
    path = write_project(tmp_path / "shops", infer(table(), "shops", "../shops.csv", "sales"))
    spec = load_spec(path)
    assert spec.data.source == str(data)  # relative to the spec's folder
    assert spec.features.declared is not None
    with pytest.raises(SpecError, match="exists already"):
        write_project(tmp_path / "shops", infer(table(), "shops", "../shops.csv", "sales"))
