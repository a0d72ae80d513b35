"""The new-data trigger counts rows against the data version the newest model was trained on:
the count ingest recorded in its DVC pointer (or the dataset restored from the real DVC remote
for a pointer without one), the source read as ingest reads it."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from kubeloop import data_version, model_store
from pipelines.new_data import new_rows_reason, restored_source_rows, source_rows, trained_rows
from pipelines.steps import run_steps
from tests.utils.factories import example_spec, sample_frame, write_sample


@pytest.mark.slow
def test_rows_that_arrived_since_the_trained_data_version_trigger_training(
    tmp_path, settings, monkeypatch
):
    source = write_sample(tmp_path / "raw" / "data.parquet", rows=3_000)
    spec = example_spec(source=source)
    client = model_store.configure(settings)
    assert trained_rows(client, spec, settings) is None  # nothing trained yet
    assert run_steps(spec, settings).version == "V1.0.0"

    pointer_path = data_version.dataset_path(settings, spec.name).with_suffix(".parquet.dvc")
    pointer = pointer_path.read_text()
    assert yaml.safe_load(pointer)["meta"] == {"source_rows": 3_000}
    # A pointer from before ingest recorded its rows: the dataset is pulled and counted.
    without_meta = yaml.safe_dump({"outs": yaml.safe_load(pointer)["outs"]})
    assert restored_source_rows(settings, without_meta) == 3_000

    def no_pull(*_args):
        raise AssertionError("the trigger pulled the dataset to count its rows")

    monkeypatch.setattr(data_version, "checkout", no_pull)
    trained = trained_rows(client, spec, settings)
    assert trained == source_rows(spec, settings) == 3_000
    threshold = spec.monitoring.model_copy(update={"new_source_rows": 500})
    spec = spec.model_copy(update={"monitoring": threshold})
    assert new_rows_reason(source_rows(spec, settings), trained, 500) is None

    later = sample_frame(600, seed=11)
    later["event_timestamp"] = later["event_timestamp"] + pd.Timedelta(days=60)  # a later data drop
    grown = pd.concat([pd.read_parquet(source), later], ignore_index=True)
    grown.to_parquet(source, index=False)
    assert source_rows(spec, settings) == 3_600
    assert new_rows_reason(source_rows(spec, settings), trained, 500) == (
        "new data: 600 rows since the last trained data version (threshold 500)"
    )
