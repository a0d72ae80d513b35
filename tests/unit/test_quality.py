"""Data quality rules: every broken rule is reported with its column and examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from components.ingest.quality import check_quality, normalize
from tests.utils.factories import example_spec, sample_frame


@pytest.fixture(scope="module")
def spec():
    return example_spec(source="/unused.parquet")


@pytest.fixture
def frame() -> pd.DataFrame:
    return sample_frame(2_000)


def rules(report) -> set[tuple[str, str]]:
    return {(v.rule, v.column) for v in report.violations}


def test_clean_sample_data_passes(spec, frame):
    report = check_quality(frame, spec)
    assert report.passed, report.render()


def test_missing_column_is_named(spec, frame):
    report = check_quality(frame.drop(columns=["humidity_pct"]), spec)
    assert ("missing_column", "humidity_pct") in rules(report)


def test_wrong_type_is_named_with_examples(spec, frame):
    frame["outdoor_temp_c"] = frame["outdoor_temp_c"].astype(str)
    frame.loc[5, "outdoor_temp_c"] = "warm"
    report = check_quality(frame, spec)
    violation = next(v for v in report.violations if v.rule == "type")
    assert violation.column == "outdoor_temp_c"
    assert violation.count == 1
    assert violation.examples[0]["outdoor_temp_c"] == "warm"


def test_string_column_of_numbers_is_a_type_error(spec, frame):
    frame["building_type"] = 3
    assert ("type", "building_type") in rules(check_quality(frame, spec))


def test_thirty_percent_nulls_break_the_null_fraction(spec, frame):
    rng = np.random.default_rng(0)
    frame.loc[rng.random(len(frame)) < 0.3, "outdoor_temp_c"] = np.nan
    report = check_quality(frame, spec)
    violation = next(v for v in report.violations if v.rule == "max_null_fraction")
    assert violation.column == "outdoor_temp_c"
    assert 0.25 < violation.count / len(frame) < 0.35
    assert "nulls" in report.render()


def test_null_in_non_nullable_column(spec, frame):
    frame.loc[3, "energy_kwh"] = None
    assert ("not_null", "energy_kwh") in rules(check_quality(frame, spec))


def test_out_of_range_values(spec, frame):
    frame.loc[[1, 2], "humidity_pct"] = 140.0
    report = check_quality(frame, spec)
    violation = next(v for v in report.violations if v.rule == "range")
    assert (violation.column, violation.count) == ("humidity_pct", 2)


def test_duplicate_keys(spec, frame):
    doubled = pd.concat([frame, frame.head(4)], ignore_index=True)
    violation = next(v for v in check_quality(doubled, spec).violations)
    assert violation.rule == "duplicate_key" and violation.count == 8


def test_too_few_rows(spec, frame):
    assert ("min_rows", "*") in rules(check_quality(frame.head(10), spec))


def test_all_broken_rules_are_reported_at_once(spec, frame):
    frame = frame.drop(columns=["occupancy"])
    frame.loc[0, "energy_kwh"] = -5
    assert {("missing_column", "occupancy"), ("range", "energy_kwh")} <= rules(
        check_quality(frame, spec)
    )


def test_csv_strings_normalize_to_typed_columns(spec, frame, tmp_path):
    frame.to_csv(tmp_path / "d.csv", index=False)
    from_csv = pd.read_csv(tmp_path / "d.csv")
    assert check_quality(from_csv, spec).passed
    clean = normalize(from_csv, spec)
    assert str(clean["event_timestamp"].dtype) == "datetime64[us, UTC]"
    assert clean["building_id"].dtype == "int64"
