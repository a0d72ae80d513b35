"""Data versions restore exactly; the online store serves what training joined offline."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from components.features.core import materialize_features, service_views
from components.ingest.quality import normalize
from components.train.core import feature_names, training_set
from feature_repo.engineering import FEATURES, building_features
from kubeloop.data_version import checkout, dataset_path, version_file
from kubeloop.feature_store import joins_as_of, open_store
from kubeloop.settings import PlatformSettings
from tests.utils import services
from tests.utils.factories import example_spec, sample_frame


def test_an_old_dataset_version_is_restored_byte_for_byte(settings, tmp_path):
    path = dataset_path(settings, "demo")
    path.parent.mkdir(parents=True)
    sample_frame(500, seed=1).to_parquet(path)
    first = version_file(settings, path)
    first_pointer = first.pointer.read_text()  # what a training run records
    original = path.read_bytes()
    sample_frame(500, seed=2).to_parquet(path)
    second = version_file(settings, path)
    assert first.md5 != second.md5
    restored = checkout(settings, first_pointer, tmp_path / "old.parquet")
    assert restored.read_bytes() == original


def test_online_features_equal_the_latest_offline_row_of_each_entity(settings):
    spec = example_spec(source="/unused")
    raw = normalize(sample_frame(2_000, buildings=20), spec)
    materialize_features(raw, spec, settings)
    store = open_store(settings, spec)
    engineered = building_features(raw)
    latest = engineered.sort_values("event_timestamp").groupby("building_id").tail(1)
    latest = latest.set_index("building_id")
    ids = [int(i) for i in latest.index[:5]]
    online = (
        store.get_online_features(
            features=store.get_feature_service(spec.features.service),
            entity_rows=[{"building_id": i} for i in ids],
        )
        .to_df()
        .set_index("building_id")
    )
    pd.testing.assert_frame_equal(
        online.loc[ids, FEATURES], latest.loc[ids, FEATURES], check_names=False, rtol=1e-9
    )


def test_training_set_joins_each_label_with_features_of_its_own_time(settings):
    spec = example_spec(source="/unused")
    raw = normalize(sample_frame(1_000, buildings=10), spec)
    materialize_features(raw, spec, settings)
    store = open_store(settings, spec)
    labels = raw[["building_id", "event_timestamp", "energy_kwh"]]
    joined = training_set(store, spec, labels)
    assert feature_names(store, spec) == FEATURES
    assert len(joined) == len(raw) and not joined[FEATURES].isna().any().any()
    expected = building_features(raw).merge(labels, on=["building_id", "event_timestamp"])
    merged = joined.merge(expected, on=["building_id", "event_timestamp"], suffixes=("", "_x"))
    for name in FEATURES:
        assert (merged[name] - merged[f"{name}_x"]).abs().max() < 1e-9, name


@pytest.fixture(params=["embedded", pytest.param("postgresql", marks=pytest.mark.services)])
def offline_store(request, settings: PlatformSettings) -> Iterator[PlatformSettings]:
    """The embedded DuckDB offline store over Parquet, or the cluster's PostgreSQL one."""
    if request.param == "embedded":
        yield settings
        return
    with services.postgres_database() as url:
        yield settings.model_copy(update={"feast_offline_store": url})


def test_the_as_of_join_gives_what_feasts_own_join_gives(offline_store: PlatformSettings):
    """Label times between readings, beyond the view's 7-day TTL, before any reading, and an
    unknown building: the DuckDB as-of join (over the Parquet file, or over the rows pulled
    from PostgreSQL) and Feast's get_historical_features on the same store agree."""
    spec = example_spec(source="/unused")
    raw = normalize(sample_frame(600, buildings=6), spec)
    materialize_features(raw, spec, offline_store)
    store = open_store(offline_store, spec)
    assert joins_as_of(store, service_views(store, spec))
    kind = "postgres" if offline_store.feast_offline_store else "duckdb"
    assert store.config.offline_store.type == kind
    labels = raw[["building_id", "event_timestamp", "energy_kwh"]].copy()
    shift = pd.to_timedelta([90, 0, 8 * 86_400, -200 * 86_400] * 150, unit="s")
    labels["event_timestamp"] += shift
    labels.loc[labels.index[::50], "building_id"] = 999
    service = store.get_feature_service(spec.features.service)
    # All of them, then only labels 90 s after a known building's reading: the earliest needs a
    # row from before its own time (the PostgreSQL pull must reach back a TTL).
    for chosen in (labels, labels.iloc[4::4]):
        ours = training_set(store, spec, chosen)
        feast = (
            store.get_historical_features(entity_df=chosen, features=service)
            .to_df()
            .sort_values(["event_timestamp", "building_id"], ignore_index=True)
        )
        assert len(ours) == len(feast) == len(chosen)
        pd.testing.assert_frame_equal(
            ours[["building_id", "event_timestamp", "energy_kwh", *FEATURES]],
            feast[["building_id", "event_timestamp", "energy_kwh", *FEATURES]],
            check_dtype=False,
        )
    ours = training_set(store, spec, labels)
    assert ours[FEATURES].isna().all(axis=1).sum() > 150  # the TTL and the unknown id matter


def test_declared_features_reach_feast_offline_and_online_without_python(settings):
    """The example's data with its features declared in the spec (no transform, no Feast
    module): the generated definitions apply, the training join and the online store agree."""
    from kubeloop.declared_features import feature_names as declared_names
    from kubeloop.engineering import load_transform
    from kubeloop.spec import parse_spec

    base = example_spec(source="/unused").model_dump(mode="json", by_alias=True)
    base["features"] = {
        "declared": [
            {"column": "floor_area_m2", "encode": "log"},
            {"column": "building_type", "encode": "one_hot", "categories": ["office", "retail"]},
            {"column": "outdoor_temp_c"},
            {"column": "occupancy", "encode": "ratio", "denominator": "floor_area_m2"},
            {"column": "event_timestamp", "encode": "date_parts", "parts": ["hour_sin"]},
        ]
    }
    spec = parse_spec(base)
    raw = normalize(sample_frame(1_000, buildings=10), spec)
    materialize_features(raw, spec, settings)
    store = open_store(settings, spec)
    names = declared_names(spec)
    assert feature_names(store, spec) == names
    labels = raw[["building_id", "event_timestamp", "energy_kwh"]]
    joined = training_set(store, spec, labels)
    expected = load_transform(spec)(raw)
    merged = joined.merge(expected, on=["building_id", "event_timestamp"], suffixes=("", "_x"))
    assert len(merged) == len(raw)
    for name in names:
        assert (merged[name] - merged[f"{name}_x"]).abs().max() < 1e-9, name
    latest = expected.sort_values("event_timestamp").groupby("building_id").tail(1)
    some = [int(i) for i in latest["building_id"][:3]]
    online = store.get_online_features(
        features=store.get_feature_service(spec.features.service),
        entity_rows=[{"building_id": i} for i in some],
    ).to_df()
    want = latest.set_index("building_id").loc[some, names].to_numpy()
    assert abs(online.set_index("building_id").loc[some, names].to_numpy() - want).max() < 1e-9
