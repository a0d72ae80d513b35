"""Expectations on the bundled example's dataset: each guards an assumption the loop relies on."""

from __future__ import annotations

import pandas as pd
import pytest

from components.ingest.quality import check_quality
from feature_repo.engineering import FEATURES, building_features
from kubeloop.sample_data import GeneratorConfig, generate
from tests.utils.factories import example_spec


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate(GeneratorConfig(rows=30_000, buildings=200, seed=11))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_generated_data_passes_the_bundled_specs_rules(seed):
    # Guards `make demo`: the example spec must accept whatever seed the generator gets.
    df = generate(GeneratorConfig(rows=5_000, seed=seed))
    assert check_quality(df, example_spec(source="/x")).passed


def test_drifted_data_still_passes_the_rules(frame):
    # Guards monitoring: drift is a distribution change, not a data-quality failure.
    drifted = generate(GeneratorConfig(rows=5_000, drift="both", strength=1.0))
    assert check_quality(drifted, example_spec(source="/x")).passed


def test_every_building_reports_every_week(frame):
    # Guards serving: each entity has fresh features within the feature view's 7-day TTL.
    weeks = frame.groupby("building_id")["event_timestamp"].agg(
        lambda s: s.dt.isocalendar().week.nunique()
    )
    assert weeks.min() >= 5


def test_energy_is_never_negative(frame):
    # Guards the target's range rule (min 0) and the RMSE threshold's meaning.
    assert (frame["energy_kwh"] >= 0).all()


def test_engineered_features_are_finite_and_complete(frame):
    # Guards the online store and the server's finite-feature check.
    features = building_features(frame)
    assert list(features.columns) == ["building_id", "event_timestamp", *FEATURES]
    assert features[FEATURES].notna().all().all()
    assert (features[FEATURES].abs() < 1e6).all().all()
