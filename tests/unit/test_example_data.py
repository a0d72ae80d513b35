"""The example tables: scikit-learn's datasets with the id and time a real table has."""

from __future__ import annotations

import pandas as pd

from kubeloop.example_data import example_table
from kubeloop.scaffold import infer


def test_each_example_has_unique_ids_increasing_times_and_its_target() -> None:
    for name, task in (("diabetes", "regression"), ("wine", "classification")):
        frame = example_table(name)
        ids, times = frame.iloc[:, 0], pd.to_datetime(frame.iloc[:, 1])
        assert ids.is_unique and times.is_monotonic_increasing
        target = frame.columns[-1]
        assert infer(frame, name, f"{name}.csv", target).spec["task"] == task
    assert set(example_table("wine")["cultivar"]) == {"class_0", "class_1", "class_2"}
