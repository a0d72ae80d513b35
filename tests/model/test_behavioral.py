"""Behavioral tests of the example model: minimum quality, directions physics implies, and
invariance to what should not matter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.train.core import build_pipeline
from feature_repo.engineering import FEATURES, building_features
from kubeloop.metrics import regression_metrics
from kubeloop.sample_data import GeneratorConfig, generate
from tests.utils.factories import example_spec


@pytest.fixture(scope="module")
def model_and_test():
    raw = generate(GeneratorConfig(rows=40_000, buildings=300, seed=5))
    feats = building_features(raw).assign(energy_kwh=raw["energy_kwh"].to_numpy())
    feats = feats.sort_values("event_timestamp", ignore_index=True)
    cut = int(len(feats) * 0.8)
    train, test = feats.iloc[:cut], feats.iloc[cut:]
    model = build_pipeline(example_spec(source="/x"))
    model.fit(train[FEATURES].to_numpy(), train["energy_kwh"].to_numpy())
    return model, test


def predict(model, rows: pd.DataFrame) -> np.ndarray:
    return model.predict(rows[FEATURES].to_numpy(dtype="float64"))


def test_minimum_quality_on_later_data(model_and_test):
    model, test = model_and_test
    metrics = regression_metrics(test["energy_kwh"], predict(model, test))
    assert metrics["r2"] > 0.85, metrics


def test_bigger_buildings_use_more_energy(model_and_test):
    model, test = model_and_test
    rows = test.sample(500, random_state=0)
    bigger = rows.assign(log_floor_area=rows["log_floor_area"] + np.log(2))
    assert (predict(model, bigger) > predict(model, rows)).mean() > 0.9


def test_colder_weather_needs_more_heating(model_and_test):
    model, test = model_and_test
    rows = test[test["outdoor_temp_c"].between(10, 16)].sample(300, random_state=0)
    colder = rows.assign(
        outdoor_temp_c=rows["outdoor_temp_c"] - 8,
        heating_degrees=np.maximum(0, 18 - (rows["outdoor_temp_c"] - 8)),
    )
    assert predict(model, colder).mean() > predict(model, rows).mean() * 1.05


def test_prediction_does_not_depend_on_row_order(model_and_test):
    model, test = model_and_test
    rows = test.head(200)
    shuffled = rows.sample(frac=1.0, random_state=1)
    np.testing.assert_allclose(
        predict(model, shuffled), pd.Series(predict(model, rows), index=rows.index)[shuffled.index]
    )
