"""The sample data generator: deterministic, chunked, and drift that really shifts."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from kubeloop.sample_data import GeneratorConfig, generate, iter_chunks, write


def test_same_seed_gives_the_same_rows():
    a = generate(GeneratorConfig(rows=2_000, seed=3))
    b = generate(GeneratorConfig(rows=2_000, seed=3))
    pd.testing.assert_frame_equal(a, b)


def test_other_seed_gives_other_rows():
    a = generate(GeneratorConfig(rows=2_000, seed=3))
    b = generate(GeneratorConfig(rows=2_000, seed=4))
    assert not a["energy_kwh"].equals(b["energy_kwh"])


def test_entity_and_timestamp_are_unique_and_span_the_weeks():
    cfg = GeneratorConfig(rows=20_000, buildings=100, weeks=4)
    df = generate(cfg)
    assert not df.duplicated(["building_id", "event_timestamp"]).any()
    span = df["event_timestamp"].max() - df["event_timestamp"].min()
    assert pd.Timedelta(days=25) < span <= pd.Timedelta(weeks=4)
    assert df["building_id"].nunique() == 100


def test_target_depends_on_weather_and_size():
    df = generate(GeneratorConfig(rows=20_000))
    per_m2 = df["energy_kwh"] / df["floor_area_m2"]
    cold = per_m2[df["outdoor_temp_c"] < 8].mean()
    mild = per_m2[(df["outdoor_temp_c"] > 17) & (df["outdoor_temp_c"] < 23)].mean()
    assert cold > mild * 1.1
    assert df["energy_kwh"].corr(df["floor_area_m2"]) > 0.5


def test_covariate_drift_shifts_inputs_but_not_the_buildings():
    base = generate(GeneratorConfig(rows=10_000))
    hot = generate(GeneratorConfig(rows=10_000, drift="covariate", strength=1.0))
    assert hot["outdoor_temp_c"].mean() - base["outdoor_temp_c"].mean() > 8
    pd.testing.assert_series_equal(base["floor_area_m2"], hot["floor_area_m2"])


def test_concept_drift_changes_the_target_for_the_same_inputs():
    base = generate(GeneratorConfig(rows=10_000))
    shifted = generate(GeneratorConfig(rows=10_000, drift="concept", strength=1.0))
    pd.testing.assert_series_equal(base["outdoor_temp_c"], shifted["outdoor_temp_c"])
    assert shifted["energy_kwh"].mean() > base["energy_kwh"].mean() * 1.2


def test_drift_without_strength_is_refused():
    with pytest.raises(ValueError, match="strength"):
        GeneratorConfig(drift="covariate")


def test_chunks_are_bounded_in_size():
    sizes = [len(c) for c in iter_chunks(GeneratorConfig(rows=10_500, chunk_rows=2_000))]
    assert sizes == [2_000] * 5 + [500]


def test_write_streams_parquet_and_csv(tmp_path):
    cfg = GeneratorConfig(rows=5_000, chunk_rows=1_000)
    seen = []
    path = write(cfg, tmp_path / "d.parquet", progress=seen.append)
    assert pq.ParquetFile(path).metadata.num_rows == 5_000
    assert seen == [1_000] * 5
    csv = pd.read_csv(write(cfg, tmp_path / "d.csv"))
    assert len(csv) == 5_000
    assert list(csv.columns) == list(generate(cfg).columns)
