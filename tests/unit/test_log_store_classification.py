"""The prediction log holds a classifier's rows: labels and probabilities through the spool and
the shipper (COPY on PostgreSQL, executemany on SQLite), class feedback, and an older log
brought up to the schema in place."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    inspect,
    select,
)

from kubeloop.log_store import ensure_schema, feedback, make_engine, predictions
from serving.prediction_log import LogBatch, write_feedback
from serving.shipper import store_segments
from serving.spool import to_table
from tests.utils import services

CLASSES = np.array([3, 5, 7])  # integer classes: stored as "3", "5", "7"


def old_schema(engine) -> None:
    """The tables as the first release created them: no classification columns, a NOT NULL
    numeric ``actual``."""
    metadata = MetaData()
    Table(
        "predictions",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("request_id", String(64), nullable=False),
        Column("ts", DateTime(timezone=True), nullable=False),
        Column("entity_id", String(128)),
        Column("features", JSON, nullable=False),
        Column("prediction", Float, nullable=False),
        Column("model_name", String(128), nullable=False),
        Column("model_version", String(32), nullable=False),
        Column("model_label", String(64), nullable=False),
        Column("role", String(16), nullable=False),
    )
    Table(
        "feedback",
        metadata,
        Column("request_id", String(64), primary_key=True),
        Column("ts", DateTime(timezone=True), nullable=False),
        Column("actual", Float, nullable=False),
    )
    metadata.create_all(engine)


def classifier_batch(n: int) -> LogBatch:
    proba = np.random.default_rng(0).dirichlet([1, 1, 1], size=n)
    return LogBatch(
        base_id="req",
        ts=time.time(),
        positions=None,
        entity_ids=[str(i) for i in range(n)],
        feature_names=("a", "b"),
        features=np.ones((n, 2)),
        predictions=proba,
        classes=CLASSES,
        model_name="wine",
        model_version="1",
        model_label="V1.0.0",
        role="champion",
    )


def check_round_trip(engine) -> None:
    batch = classifier_batch(5)
    assert store_segments(engine, [("run/seg-1", to_table([batch]))]) == 5
    write_feedback(engine, [("req-0", "5"), ("req-1", 2.5)])
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                predictions.c.prediction, predictions.c.label, predictions.c.probabilities
            ).order_by(predictions.c.request_id)
        ).all()
        truth = dict(
            (r[0], (r[1], r[2]))
            for r in conn.execute(
                select(feedback.c.request_id, feedback.c.actual, feedback.c.actual_label)
            )
        )
    proba = batch.predictions
    best = proba.argmax(axis=1)
    assert [r.label for r in rows] == [str(c) for c in CLASSES[best]]
    assert [r.prediction for r in rows] == pytest.approx(proba[np.arange(5), best].tolist())
    assert rows[0].probabilities == pytest.approx(
        dict(zip(["3", "5", "7"], proba[0].tolist(), strict=True))
    )
    assert truth == {"req-0": (None, "5"), "req-1": (2.5, None)}


def test_sqlite_log_is_upgraded_in_place_and_takes_a_classifiers_rows(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    old_schema(engine)
    with engine.begin() as conn:  # SQLite keeps NOT NULL: the upgrade adds what it can
        conn.exec_driver_sql("DROP TABLE feedback")
    ensure_schema(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("predictions")}
    assert {"label", "probabilities"} <= columns
    ensure_schema(engine)  # again: nothing to add, no error
    check_round_trip(engine)


def test_postgres_log_is_upgraded_in_place_and_copy_stores_a_classifiers_rows() -> None:
    with services.postgres_database() as url:
        engine = make_engine(url)
        old_schema(engine)
        ensure_schema(engine)
        actual = {c["name"]: c for c in inspect(engine).get_columns("feedback")}["actual"]
        assert actual["nullable"]
        check_round_trip(engine)
        engine.dispose()
