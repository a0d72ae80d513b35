"""Reading the prediction log: the window, the feedback join, the role and version filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.window import count_labelled_since, open_log, read_paired, read_window
from tests.utils.monitoring import log_feedback, log_rows

FEATURES = ["a", "b", "c"]
START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path):
    return open_log(f"sqlite:///{tmp_path / 'predictions.db'}")


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(rng.normal(size=(rows, 3)), columns=FEATURES)
    out["prediction"] = out.sum(axis=1)
    return out


def log(engine, rows: int, **kw) -> list[str]:
    kw = {"model_name": "m", "version": "1", "label": "V1.0.0", "start": START, **kw}
    return log_rows(engine, frame(rows, kw.pop("seed", 0)), FEATURES, **kw)


def test_window_holds_the_rows_between_start_and_end_with_their_feedback(engine) -> None:
    ids = log(engine, 100, spacing=timedelta(minutes=1))  # 100 minutes of traffic
    log_feedback(engine, ids[:30], [float(i) for i in range(30)], START + timedelta(hours=3))
    window = read_window(
        engine, "m", FEATURES, START + timedelta(minutes=10), START + timedelta(minutes=60)
    )
    assert window.rows == 50
    assert len(window.labelled) == 20  # minutes 10..29 got feedback
    expected = frame(100).iloc[10:60].reset_index(drop=True)
    np.testing.assert_allclose(window.frame[FEATURES].to_numpy(), expected[FEATURES].to_numpy())
    assert sorted(window.labelled["actual"].tolist()) == [float(i) for i in range(10, 30)]


def test_window_keeps_the_champion_version_and_leaves_shadow_rows_out(engine) -> None:
    ids = log(engine, 40)
    log(engine, 40, role="shadow", version="2", label="V1.0.1", request_ids=ids, seed=1)
    log(engine, 10, version="0", label="V0.0.0", prefix="old", seed=2)
    log(engine, 10, model_name="other", prefix="o")
    window = read_window(engine, "m", FEATURES, START, START + timedelta(days=1), model_version="1")
    assert window.rows == 40
    every_version = read_window(engine, "m", FEATURES, START, START + timedelta(days=1))
    assert every_version.rows == 50


def test_missing_and_null_features_become_nan(engine) -> None:
    data = frame(3)
    data.loc[1, "b"] = np.nan
    log_rows(engine, data, FEATURES, model_name="m", version="1", label="V1.0.0", start=START)
    window = read_window(engine, "m", [*FEATURES, "absent"], START, START + timedelta(hours=1))
    assert np.isnan(window.frame.loc[1, "b"]) and window.frame["absent"].isna().all()
    assert window.frame.loc[0, "a"] == pytest.approx(data.loc[0, "a"])


def test_empty_window_is_an_empty_frame_with_the_columns(engine) -> None:
    log(engine, 5)
    window = read_window(
        engine, "m", FEATURES, START - timedelta(days=2), START - timedelta(days=1)
    )
    assert window.rows == 0 and list(window.frame.columns) == [*FEATURES, "prediction", "actual"]


def test_window_is_read_in_chunks_without_losing_rows(engine) -> None:
    log(engine, 1_050)
    window = read_window(engine, "m", FEATURES, START, START + timedelta(days=1), chunk_rows=100)
    assert window.rows == 1_050
    np.testing.assert_allclose(window.frame["prediction"], frame(1_050)["prediction"])


def test_new_labels_are_counted_once_per_served_request(engine) -> None:
    ids = log(engine, 20)
    log(engine, 20, role="shadow", request_ids=ids, version="2", label="V1.0.1")
    log_feedback(engine, ids[:5], [1.0] * 5, START + timedelta(hours=1))
    log_feedback(engine, ids[5:12], [1.0] * 7, START + timedelta(hours=5))
    assert count_labelled_since(engine, "m", None) == 12
    assert count_labelled_since(engine, "m", START + timedelta(hours=2)) == 7
    assert count_labelled_since(engine, "other", None) == 0


def test_paired_rows_put_shadow_and_champion_of_one_request_side_by_side(engine) -> None:
    ids = log(engine, 10)
    log(engine, 10, role="shadow", request_ids=ids, version="2", label="V1.0.1", seed=4)
    log_feedback(engine, ids[:4], [0.5] * 4, START + timedelta(hours=1))
    pairs = read_paired(engine, "m", START, START + timedelta(days=1), ["champion", "shadow"])
    assert len(pairs) == 20 and set(pairs["role"]) == {"champion", "shadow"}
    assert pairs["actual"].notna().sum() == 8  # both rows of the 4 labelled requests


def test_a_sampled_window_reads_features_of_a_sample_and_every_label(engine) -> None:
    ids = log(engine, 500, spacing=timedelta(seconds=10))
    log_feedback(engine, ids[:300], [float(i) for i in range(300)], START + timedelta(hours=3))
    end = START + timedelta(days=1)
    window = read_window(engine, "m", FEATURES, START, end, sample_rows=120, seed=3)
    assert window.rows == 500 and len(window.frame) == 120
    assert sorted(window.labelled["actual"].tolist()) == [float(i) for i in range(300)]
    # every sampled row's features belong to its own prediction (prediction = a + b + c)
    np.testing.assert_allclose(window.frame[FEATURES].sum(axis=1), window.frame["prediction"])
    assert window.frame["prediction"].nunique() == 120  # 120 distinct rows
    again = read_window(engine, "m", FEATURES, START, end, sample_rows=120, seed=3)
    pd.testing.assert_frame_equal(window.frame, again.frame)  # seeded: the same sample
    whole = read_window(engine, "m", FEATURES, START, end, sample_rows=1000)
    assert len(whole.frame) == 500 and whole.rows == 500


def test_a_log_from_before_the_feedback_time_index_gets_it(engine) -> None:
    """A log an older server created gets the index on ``feedback.ts`` when a server or
    shipper next opens it."""
    from sqlalchemy import inspect

    from kubeloop.log_store import ensure_schema

    log(engine, 5)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_feedback_ts")
    assert "ix_feedback_ts" not in {i["name"] for i in inspect(engine).get_indexes("feedback")}
    ensure_schema(engine)
    assert "ix_feedback_ts" in {i["name"] for i in inspect(engine).get_indexes("feedback")}


def test_labels_since_are_counted_from_their_time_not_by_scanning_every_prediction(
    engine,
) -> None:
    """On a fresh log SQLite, left to itself, scans ``predictions`` (the whole log, features
    included) and looks each one's feedback up; the count steers it to the labels since."""
    from sqlalchemy import event

    ids = log(engine, 5)
    log_feedback(engine, ids, [1.0] * 5, START)
    plans: list[str] = []
    event.listen(engine, "before_cursor_execute", _explain(plans))
    assert count_labelled_since(engine, "m", START) == 0
    assert "SEARCH feedback USING INDEX ix_feedback_ts" in plans[0]
    assert "SEARCH predictions USING INDEX ix_predictions_request_id" in plans[0]


def _explain(plans: list[str]):
    """A cursor hook that records SQLite's plan of each count query."""

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("SELECT count(*)"):
            rows = conn.connection.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plans.append(str(rows.fetchall()))

    return record
