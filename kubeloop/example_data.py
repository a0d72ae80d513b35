"""Tables to try kubeloop on: datasets scikit-learn ships, shaped as a user's data arrives.

``diabetes`` (regression: disease progression) and ``wine`` (classification: the cultivar, as
a string label) come with scikit-learn, so nothing is downloaded. A real table has an id per
entity and a time per observation, which these lack: each row gets an id and an hourly
timestamp, so the whole loop (Feast point-in-time joins, lookups by id) works on them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pandas as pd

Example = Literal["diabetes", "wine"]
START = datetime(2026, 9, 1, tzinfo=UTC)
# name -> (loader in sklearn.datasets, id column, time column, target column)
EXAMPLES = {
    "diabetes": ("load_diabetes", "patient_id", "visit_time", "progression"),
    "wine": ("load_wine", "bottle_id", "tasted_at", "cultivar"),
}


def example_table(name: Example) -> pd.DataFrame:
    """The dataset with an id and a time column first and the target last."""
    from sklearn import datasets

    loader, id_column, time_column, target = EXAMPLES[name]
    bunch = getattr(datasets, loader)(as_frame=True)
    frame = bunch.frame.rename(columns={"target": target})
    frame.columns = [str(c).replace("/", "_per_") for c in frame.columns]
    if name == "wine":
        frame[target] = np.asarray(bunch.target_names)[bunch.target]
    frame = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)  # classes interleave
    frame.insert(0, id_column, np.arange(1, len(frame) + 1))
    times = pd.date_range(START, periods=len(frame), freq="h")
    frame.insert(1, time_column, times.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return frame
