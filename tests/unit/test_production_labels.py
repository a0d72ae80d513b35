"""Production's labelled rows as training data: read from the log, shaped, checked, combined."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.ingest.quality import check_rules
from kubeloop import production_labels as pl
from kubeloop.errors import SpecError
from kubeloop.spec import ColumnRule
from monitoring.window import open_log
from tests.utils.factories import example_spec
from tests.utils.monitoring import log_feedback, log_rows

FEATURES = ["a", "b"]
START = datetime(2026, 11, 1, tzinfo=UTC)
SPEC = example_spec(source="/unused")  # entity building_id (int), target energy_kwh (min 0)


@pytest.fixture
def engine(tmp_path: Path):
    return open_log(f"sqlite:///{tmp_path / 'predictions.db'}")


def served(rows: int, entities=None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = pd.DataFrame(rng.normal(size=(rows, 2)), columns=FEATURES)
    out["prediction"] = out.sum(axis=1)
    if entities is not None:
        out["entity_id"] = entities
    return out


def log(engine, frame: pd.DataFrame, **kw) -> list[str]:
    kw = {"model_name": "m", "version": "1", "label": "V1.0.0", "start": START, **kw}
    return log_rows(engine, frame, FEATURES, **kw)


def test_labelled_rows_are_served_predictions_of_the_window_with_feedback(engine) -> None:
    ids = log(engine, served(10, [str(i) for i in range(10)]), spacing=timedelta(hours=1))
    shadow = log(engine, served(10, seed=1), role="shadow", prefix="s")
    other = log(engine, served(5, seed=2), model_name="other", prefix="o")
    log_feedback(engine, ids[:8], [float(i) for i in range(8)], START + timedelta(hours=12))
    log_feedback(engine, shadow + other, [1.0] * 15, START + timedelta(hours=12))

    got = pl.read_labelled(engine, "m", START + timedelta(hours=2), START + timedelta(hours=9))

    # hours 2..7 labelled (8 and 9 have no feedback / are outside), shadow and other model out
    assert got["entity_id"].tolist() == [str(i) for i in range(2, 8)]
    assert got["actual"].tolist() == [float(i) for i in range(2, 8)]
    assert got["ts"].iloc[0] == START + timedelta(hours=2)
    expected = served(10).iloc[2:8][FEATURES].to_numpy()
    np.testing.assert_allclose(got[FEATURES].to_numpy(), expected)


def test_training_takes_production_models_rows_where_the_log_holds_them(engine) -> None:
    production = str(SPEC.rollout.production_model)  # the bundled spec's two environments
    one_environment = SPEC.model_copy(
        update={"rollout": SPEC.rollout.model_copy(update={"production_model": None})}
    )
    window = (START, START + timedelta(days=1))
    # dev and staging answer with the project's model (staging: production's requests mirrored)
    staging = log(engine, served(6, seed=1), model_name=SPEC.model_name, prefix="s")
    log_feedback(engine, staging, [1.0] * 6, START + timedelta(hours=2))
    assert pl.read_production_labelled(engine, SPEC, *window)[0] == SPEC.model_name

    # production's callers, answered by the model approvals fill: theirs, never both
    answered = log(engine, served(4, seed=2), model_name=production, prefix="p")
    log_feedback(engine, answered, [2.0] * 4, START + timedelta(hours=2))
    model, rows = pl.read_production_labelled(engine, SPEC, *window)
    assert (model, rows["actual"].tolist()) == (production, [2.0] * 4)
    expected = served(4, seed=2)[FEATURES].to_numpy()
    np.testing.assert_allclose(rows[FEATURES].to_numpy(), expected)

    # a spec without a production model: one environment, the project's rows
    model, rows = pl.read_production_labelled(engine, one_environment, *window)
    assert (model, rows["actual"].tolist()) == (SPEC.model_name, [1.0] * 6)
    assert pl.read_production_labelled(engine, SPEC, START, START)[0] is None


def test_a_log_no_server_wrote_yet_has_no_labelled_rows(engine) -> None:
    assert pl.read_labelled(engine, "m", START, START + timedelta(days=1)).empty


def labelled(entities, times, actual, a=None) -> pd.DataFrame:
    n = len(entities)
    return pd.DataFrame(
        {
            "entity_id": entities,
            "ts": [START + timedelta(seconds=s) for s in times],
            "actual": actual,
            "a": a if a is not None else [1.0] * n,
            "b": [2.0] * n,
        }
    )


def test_one_row_per_entity_and_time_the_latest_logged_and_every_row_without_an_id() -> None:
    rows = pl.training_rows(
        labelled(["7", "7", "8", None, None], [0, 0, 0, 0, 0], [1.0, 2.0, 3.0, 4.0, 5.0]), SPEC
    )
    assert rows["energy_kwh"].tolist() == [2.0, 3.0, 4.0, 5.0]
    assert list(rows.columns) == [
        "building_id",
        "event_timestamp",
        "energy_kwh",
        "logged.a",
        "logged.b",
        pl.ORIGIN,
    ]
    assert (rows[pl.ORIGIN] == pl.FROM_LOG).all()
    assert pl.as_declared_types(rows, SPEC)["building_id"].tolist()[:2] == [7, 8]


def test_an_entity_asked_for_again_with_the_same_features_and_label_is_one_row() -> None:
    """Features by id repeat the online store's values: 30 requests of one entity are one
    sample; a changed feature or label, or another entity, is another."""
    rows = pl.training_rows(
        labelled(
            ["7"] * 30 + ["7", "7", "8", None, None],
            list(range(30)) + [30, 31, 32, 33, 34],
            [1.0] * 30 + [1.0, 2.0, 1.0, 1.0, 1.0],
            a=[1.0] * 30 + [9.0, 1.0, 1.0, 1.0, 1.0],
        ),
        SPEC,
    )
    kept = list(zip(rows["building_id"], rows["energy_kwh"], rows["logged.a"], strict=True))
    assert kept == [
        ("7", 1.0, 1.0),
        ("7", 1.0, 9.0),
        ("7", 2.0, 1.0),
        ("8", 1.0, 1.0),
        (None, 1.0, 1.0),
    ]
    assert rows["event_timestamp"].iloc[0] == START + timedelta(seconds=29)  # the latest repeat


def test_logged_rows_pass_the_spec_rules_for_key_and_target_and_need_every_feature() -> None:
    rows = pl.training_rows(
        labelled(["7", "x", None], [0, 1, 2], [1.0, -5.0, 3.0], a=[1.0, 1.0, np.nan]), SPEC
    )
    report = check_rules(rows, pl.rules(SPEC, rows))
    broken = {(v.rule, v.column) for v in report.violations}
    assert broken == {
        ("type", "building_id"),  # "x" is no int
        ("range", "energy_kwh"),  # the spec's min 0
        ("not_null", "logged.a"),  # a feature the row was not logged with
    }
    clean = pl.training_rows(labelled(["7", None], [0, 1], [1.0, 2.0]), SPEC)
    assert check_rules(clean, pl.rules(SPEC, clean)).passed


def dataset() -> pd.DataFrame:
    source = pd.DataFrame(
        {
            "building_id": [1, 2],
            "event_timestamp": pd.to_datetime([START, START], utc=True),
            "energy_kwh": [10.0, 20.0],
            "building_type": ["office", "retail"],
        }
    )
    logged = pl.as_declared_types(
        pl.training_rows(labelled(["2", None], [0, 5], [7.0, 8.0]), SPEC), SPEC
    )
    return pd.concat([source.assign(**{pl.ORIGIN: pl.FROM_SOURCE}), logged], ignore_index=True)


def test_split_gives_back_the_source_rows_and_the_logged_ones() -> None:
    source, logged = pl.split(dataset(), SPEC)
    assert source["building_type"].tolist() == ["office", "retail"]
    assert "logged.a" not in source.columns and pl.ORIGIN not in source.columns
    assert logged["energy_kwh"].tolist() == [7.0, 8.0]
    assert pl.is_logged(logged).all()
    plain = dataset().iloc[:2].drop(columns=[pl.ORIGIN])
    assert pl.split(plain, SPEC)[1].empty


def test_a_served_row_replaces_the_source_row_of_the_same_entity_and_time() -> None:
    labels = dataset()
    history = pl.source_labels(labels, SPEC)
    assert history["building_id"].dtype == "int64" and len(history) == 2
    joined = history.assign(a=[0.0, 0.0], b=[0.0, 0.0])
    combined = pl.combine(
        joined, pl.served_rows(labels[pl.is_logged(labels)], SPEC, FEATURES), SPEC
    )
    assert sorted(combined["energy_kwh"].tolist()) == [7.0, 8.0, 10.0]  # 20.0 replaced by 7.0
    assert combined.loc[combined["energy_kwh"] == 7.0, "a"].item() == 1.0


@pytest.mark.parametrize("zone", [None, "UTC", "Europe/Berlin"])
def test_served_rows_take_the_joins_time_representation(zone: str | None) -> None:
    """Feast's PostgreSQL store gives the join back naive or in its own zone and unit; the
    served rows join it in that representation, so the frame sorts and the same instant is
    still the same row."""
    labels = dataset()
    history = pl.source_labels(labels, SPEC)
    times = (
        history["event_timestamp"]
        .dt.tz_convert(zone or "UTC")
        .astype(f"datetime64[ns, {zone}]" if zone else "datetime64[ns, UTC]")
    )
    if zone is None:
        times = times.dt.tz_localize(None)
    joined = history.assign(event_timestamp=times, a=[0.0, 0.0], b=[0.0, 0.0])
    served = pl.served_rows(labels[pl.is_logged(labels)], SPEC, FEATURES)
    combined = pl.combine(joined, served, SPEC)
    assert combined["event_timestamp"].dtype == joined["event_timestamp"].dtype
    assert sorted(combined["energy_kwh"].tolist()) == [7.0, 8.0, 10.0]  # 20.0 replaced by 7.0
    combined.sort_values(["event_timestamp", "building_id"])  # one representation: it sorts


def test_labels_without_logged_rows_train_on_the_source_alone() -> None:
    labels = dataset().iloc[:2].drop(columns=[pl.ORIGIN])
    assert not pl.is_logged(labels).any()
    served_rows = pl.served_rows(labels[pl.is_logged(labels)], SPEC, FEATURES)
    joined = pl.source_labels(labels, SPEC).assign(a=1.0, b=2.0)
    pd.testing.assert_frame_equal(pl.combine(joined, served_rows, SPEC), joined)


def test_a_feature_the_log_does_not_hold_is_named() -> None:
    labels = dataset()
    with pytest.raises(SpecError, match=r"\['c'\]") as caught:
        pl.served_rows(labels[pl.is_logged(labels)], SPEC, ["a", "c"])
    assert caught.value.field == "retraining.labelled_hours"


def test_the_source_rows_of_a_dataset_leave_the_logged_ones_out(tmp_path: Path) -> None:
    dataset().to_parquet(tmp_path / "mixed.parquet")
    assert pl.source_rows(tmp_path / "mixed.parquet") == 2
    dataset().iloc[:2].drop(columns=[pl.ORIGIN]).to_parquet(tmp_path / "plain.parquet")
    assert pl.source_rows(tmp_path / "plain.parquet") == 2


def test_a_classifiers_labelled_rows_carry_the_true_class_in_the_targets_type(engine) -> None:
    from kubeloop.log_store import feedback

    ids = log(engine, served(4, ["1", "2", "3", "4"]))
    with engine.begin() as conn:
        conn.execute(
            feedback.insert(),
            [
                {"request_id": ids[0], "ts": START, "actual": None, "actual_label": "1"},
                {"request_id": ids[1], "ts": START, "actual": None, "actual_label": "0"},
                {"request_id": ids[2], "ts": START, "actual": 2.5, "actual_label": None},
            ],
        )
    got = pl.read_labelled(engine, "m", START, START + timedelta(days=1), task="classification")
    assert got["actual"].tolist() == ["1", "0"]
    spec = SPEC.model_copy(
        update={
            "data": SPEC.data.model_copy(
                update={"columns": {**SPEC.data.columns, "energy_kwh": ColumnRule(type="int")}}
            )
        }
    )
    rows = pl.training_rows(got, spec)
    assert check_rules(rows, pl.rules(spec, rows)).passed
    assert pl.as_declared_types(rows, spec)["energy_kwh"].tolist() == [1, 0]


def test_a_model_retrained_on_production_rows_is_compared_with_them():
    """The reference monitoring compares with: a sample of the training rows, or, after a
    retraining on production's labelled rows, those of their window (held-out ones included),
    so the drift the model was retrained for is not flagged again."""
    from components.train import core

    stamps = pd.date_range(START, periods=9_000, freq="min", tz="UTC")
    frame = pd.DataFrame({SPEC.entity_key: np.arange(9_000) % 50, SPEC.timestamp: stamps})
    frame["a"] = np.where(np.arange(9_000) >= 7_000, 5.0, 0.0)  # the last 2,000: drifted
    since = stamps[7_000]
    train, held_out = core.time_split(frame, SPEC)

    reference = core.reference_sample(train, SPEC, held_out, since)
    assert len(reference) == 2_000 and (reference["a"] == 5.0).all()
    before = core.reference_sample(train, SPEC)  # no production rows: the training rows
    assert len(before) == core.REFERENCE_ROWS and (before["a"] == 0.0).mean() > 0.8
    # Too few production rows to judge by (monitoring.min_rows): the training rows again.
    late = stamps[-SPEC.monitoring.min_rows + 1]
    assert core.reference_sample(train, SPEC, held_out, late).equals(before)
