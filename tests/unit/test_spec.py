"""The project spec: a typo or a bad value fails with the key's name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubeloop.errors import SpecError
from kubeloop.settings import PlatformSettings
from kubeloop.spec import dump_spec, load_spec, parse_spec, resolve_source
from tests.utils.factories import EXAMPLE_SPEC


def raw_example() -> dict:
    return yaml.safe_load(EXAMPLE_SPEC.read_text())


def test_bundled_example_spec_is_valid(monkeypatch):
    monkeypatch.setenv("KUBELOOP_WORK_DIR", "/data/work")
    spec = load_spec(EXAMPLE_SPEC)
    assert spec.name == "building-energy"
    # Kept as written: the submitting machine's work folder means nothing in a step's pod.
    assert spec.data.source == "${KUBELOOP_WORK_DIR}/raw/building_energy.parquet"
    assert spec.model_name == "building-energy"
    assert spec.metric_direction == "min"


def test_unknown_key_is_rejected_with_its_path():
    raw = raw_example()
    raw["model"]["estimatr"] = {}
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert "model.estimatr" in err.value.message
    assert err.value.field == "model.estimatr"


def test_target_must_be_a_declared_column():
    raw = raw_example()
    raw["target"] = "kwh"
    with pytest.raises(SpecError, match="target 'kwh' is not declared"):
        parse_spec(raw)


def test_bad_task_names_the_key():
    raw = raw_example()
    raw["task"] = "ranking"
    with pytest.raises(SpecError, match="task"):
        parse_spec(raw)


def test_negative_manual_revision_is_rejected():
    raw = raw_example()
    raw["model"]["manual_revision"] = -1
    with pytest.raises(SpecError, match="model.manual_revision"):
        parse_spec(raw)


def test_estimator_with_unknown_class_fails_on_build():
    raw = raw_example()
    raw["model"]["estimator"]["class"] = "sklearn.ensemble.NoSuchRegressor"
    spec = parse_spec(raw)
    with pytest.raises(SpecError, match="model.estimator.class"):
        spec.model.estimator.build()


def test_estimator_with_unknown_param_fails_on_build():
    raw = raw_example()
    raw["model"]["estimator"]["params"] = {"n_trees": 3}
    with pytest.raises(SpecError, match="model.estimator.params"):
        parse_spec(raw).model.estimator.build()


def test_spec_survives_a_json_round_trip_with_its_types():
    spec = parse_spec(raw_example())
    again = parse_spec(dump_spec(spec))
    assert again == spec
    assert isinstance(again.model.estimator.params["max_iter"], int)


def test_missing_spec_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_relative_source_resolves_against_the_spec_folder(tmp_path: Path):
    raw = raw_example()
    raw["data"]["source"] = "data/raw.csv"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_spec(path).data.source == str(tmp_path / "data" / "raw.csv")


def test_placeholders_resolve_with_the_reading_process_settings(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("KUBELOOP_WORK_DIR", "/laptop/work")  # where the run was submitted
    spec = load_spec(EXAMPLE_SPEC)
    monkeypatch.setenv("KUBELOOP_WORK_DIR", "/tmp/kubeloop")  # the step's pod
    monkeypatch.setenv("DROP", "2026-11")
    step = PlatformSettings()
    assert resolve_source(spec.data.source, step) == "/tmp/kubeloop/raw/building_energy.parquet"
    drop = "s3://raw/${DROP}/readings.parquet"
    assert resolve_source(drop, step) == "s3://raw/2026-11/readings.parquet"
    # The same JSON the pipeline carries resolves the same way in the step.
    assert parse_spec(dump_spec(spec)).data.source == spec.data.source


def test_an_unset_placeholder_names_the_variable(tmp_path: Path):
    with pytest.raises(SpecError, match=r"\$\{NOT_SET_ANYWHERE\} is not set") as err:
        resolve_source("s3://b/${NOT_SET_ANYWHERE}/x.csv", PlatformSettings(work_dir=tmp_path))
    assert err.value.field == "data.source"


def test_a_leading_placeholder_is_not_made_relative_to_the_spec_folder(tmp_path: Path):
    raw = raw_example()
    raw["data"]["source"] = "${RAW_ROOT}/raw.csv"
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_spec(path).data.source == "${RAW_ROOT}/raw.csv"
