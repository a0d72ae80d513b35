"""The monitoring reads and the launch slot on PostgreSQL (the prediction log of a cluster)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from kubeloop.log_store import ensure_schema
from monitoring import state
from monitoring.window import count_labelled_since, open_log, read_paired, read_window
from tests.utils import services
from tests.utils.monitoring import log_classes, log_feedback, log_rows

pytestmark = pytest.mark.services
FEATURES = ["a", "b"]
START = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture
def engine() -> Iterator:
    with services.postgres_database() as url:
        engine = open_log(url)
        yield engine
        engine.dispose()


def test_window_feedback_and_pairs_read_the_same_on_postgresql(engine) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, 2)), columns=FEATURES)
    frame["prediction"] = frame.sum(axis=1)
    frame.loc[5, "b"] = np.nan
    ids = log_rows(
        engine,
        frame,
        FEATURES,
        model_name="m",
        version="1",
        label="V1.0.0",
        start=START,
        spacing=timedelta(seconds=10),
    )
    log_rows(
        engine,
        frame,
        FEATURES,
        model_name="m",
        version="2",
        label="V1.0.1",
        start=START,
        spacing=timedelta(seconds=10),
        role="shadow",
        request_ids=ids,
    )
    log_feedback(engine, ids[:100], frame["prediction"][:100].tolist(), START + timedelta(hours=2))
    window = read_window(
        engine,
        "m",
        FEATURES,
        START,
        START + timedelta(minutes=30),
        model_version="1",
        chunk_rows=64,
    )
    assert window.rows == 180 and len(window.labelled) == 100
    np.testing.assert_allclose(window.frame["a"], frame["a"][:180])
    assert np.isnan(window.frame.loc[5, "b"])
    assert count_labelled_since(engine, "m", START + timedelta(hours=1)) == 100
    pairs = read_paired(engine, "m", START, START + timedelta(hours=1), ["champion", "shadow"])
    assert len(pairs) == 600 and pairs["actual"].notna().sum() == 200


def test_the_launch_slot_admits_one_of_racing_jobs_on_postgresql(engine) -> None:
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    state.create_all(engine)
    granted: list[bool] = []
    barrier = threading.Barrier(4)

    def race() -> None:
        barrier.wait()
        granted.append(
            state.claim(
                engine,
                "m",
                now=now,
                cooldown=timedelta(hours=1),
                run_timeout=timedelta(hours=6),
                launcher="kfp",
                reason="drift",
            ).granted
        )

    threads = [threading.Thread(target=race) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(granted) == [False, False, False, True]
    state.finish(engine, "m", now=now + timedelta(minutes=5), outcome="registered V1.0.1")
    later = state.claim(
        engine,
        "m",
        now=now + timedelta(minutes=30),
        cooldown=timedelta(hours=1),
        run_timeout=timedelta(hours=6),
        launcher="kfp",
        reason="drift",
    )
    assert not later.granted and "cooldown" in later.why
    assert state.read(engine, "m").launched_at == now


def test_a_classifier_window_reads_the_same_on_postgresql(engine) -> None:
    """Classes, true classes and probabilities through the server-side cursor in chunks, as
    the shipper stores them (COPY), with a later version that knows a fourth class."""
    from serving.prediction_log import write_feedback

    ensure_schema(engine)
    classes = ["class_0", "class_1", "class_2"]
    first = np.random.default_rng(0).dirichlet([1.0] * 3, size=90)
    ids = log_classes(engine, "c", first, classes, START + timedelta(minutes=1))
    four = [*classes, "class_3"]
    second = np.random.default_rng(1).dirichlet([1.0] * 4, size=30)
    ids_four = log_classes(engine, "d", second, four, START + timedelta(minutes=2), version="2")
    actual = [classes[i % 3] for i in range(60)] + ["class_3"] * 20
    write_feedback(engine, list(zip(ids[:60] + ids_four[:20], actual, strict=True)))
    window = read_window(
        engine,
        "wine",
        FEATURES,
        START,
        START + timedelta(hours=1),
        chunk_rows=16,
        sample_rows=40,
        task="classification",
    )
    assert window.rows == 120 and len(window.frame) == 40 and len(window.labelled) == 80
    assert sorted(window.labelled["actual"]) == sorted(actual)
    assert list(window.probabilities.columns) == four
    assert window.probabilities["class_3"].isna().sum() == 60
    assert np.allclose(window.probabilities.fillna(0).sum(axis=1), 1.0, atol=1e-5)
    assert set(window.frame["prediction"]) <= set(four)
