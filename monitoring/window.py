"""Read the prediction log: a time window of predictions with their ground truth.

The server writes ``predictions`` and ``feedback`` (schema: ``kubeloop.log_store``); this module
only reads them. Features are stored as one JSON object per row; turning millions of those into
a matrix is the expensive part of a monitoring run, and drift needs only a uniform sample of
them. So with ``sample_rows`` the window is read in two passes: every row's id, prediction and
feedback (numbers only, the join in the database), then the features of a seeded random sample
of ids, by primary key. Quality figures use every labelled row; the cost of the features no
longer grows with the window. JSON is parsed with orjson straight into a float matrix.

For a classifier (``task="classification"``) ``prediction`` is the predicted class and
``actual`` the true one (the log's ``label`` and ``actual_label``: strings, missing where
unlabelled), read through the same cursor as the numbers, a chunk at a time, into categoricals
(a code per row, not a string object: 10M rows of two labels would otherwise hold ~1 GB of
strings). ``Window.probabilities`` holds the labelled rows' ``{class: probability}`` JSON as a
float matrix, one column per class, for ROC AUC and log loss; only labelled rows' JSON is
parsed, since drift sees the predicted class, not its probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
from pandas.api.types import union_categoricals
from sqlalchemy import Text, and_, bindparam, case, cast, func, literal_column, select

from kubeloop.log_store import feedback, predictions

SERVED_ROLES = ("champion", "canary")  # rows whose prediction a caller received
CHUNK_ROWS = 100_000
PREDICTION = "prediction"
ACTUAL = "actual"
PROBABILITIES = "probabilities"  # classification: {class: probability} per row


def open_log(url: str):
    """An engine on the prediction log (the server's settings: WAL, busy timeout, orjson)."""
    from kubeloop.log_store import make_engine

    return make_engine(url)


@dataclass(frozen=True)
class Window:
    """Predictions of one model in ``[start, end)``.

    ``frame``: features, prediction, actual (NaN or missing: none) of every row, or of a
    uniform sample when the window was read with ``sample_rows``; ``labelled``: prediction and
    actual of every labelled row; ``probabilities``: a classifier's class probabilities of those
    labelled rows, one column per class (NaN: absent from a row's JSON); ``total_rows``: rows
    in the window (None: ``len(frame)``)."""

    start: datetime
    end: datetime
    frame: pd.DataFrame
    total_rows: int | None = None
    labelled_rows: pd.DataFrame | None = field(default=None, repr=False)
    probabilities: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def rows(self) -> int:
        return len(self.frame) if self.total_rows is None else self.total_rows

    @property
    def labelled(self) -> pd.DataFrame:
        if self.labelled_rows is not None:
            return self.labelled_rows
        return self.frame[self.frame[ACTUAL].notna()]


def _parse_features(texts: Sequence[str | None], names: Sequence[str]) -> np.ndarray:
    """JSON feature objects -> float matrix in ``names`` order (missing or null -> NaN)."""
    loads = orjson.loads
    return _matrix((loads(t) if t else {} for t in texts), len(texts), names)


def _matrix(objects: Iterable[dict], rows: int, names: Sequence[str]) -> np.ndarray:
    """Parsed JSON objects -> float matrix in ``names`` order (missing or null -> NaN).

    One flat list and one array conversion (None becomes NaN): about twice as fast as filling
    the matrix row by row.
    """
    values = [d.get(n) for d in objects for n in names]
    return np.array(values, dtype="float64").reshape(rows, len(names))


def read_window(
    engine,
    model_name: str,
    features: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    roles: Sequence[str] = ("champion",),
    model_version: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
    sample_rows: int | None = None,
    seed: int = 0,
    task: str = "regression",
) -> Window:
    """Logged predictions of ``model_name`` in ``[start, end)`` joined with their feedback.

    Args:
        engine: SQLAlchemy engine on the prediction log.
        model_name: Registered model name the rows were logged under.
        features: Feature names, in the order of the returned columns.
        start: Window start (inclusive, timezone-aware UTC).
        end: Window end (exclusive).
        roles: Which rows: ``champion`` (default), ``canary``, ``shadow``.
        model_version: Only rows of this registry version; None: any version.
        chunk_rows: Rows fetched and parsed at a time (bounds memory).
        sample_rows: Above this many rows, features are read for a uniform random sample of
            this size only (``seed``); None: for every row (a classifier's window is read in
            the same two passes then, the sample being every row).
        task: ``classification`` reads the predicted and true classes and the probabilities.

    Returns:
        A Window whose frame has the feature columns, ``prediction`` and ``actual``.
    """
    conditions = _conditions(model_name, roles, start, end, model_version)
    classify = task == "classification"
    if sample_rows is not None or classify:
        return _read_sampled(
            engine, features, (start, end), conditions, sample_rows, seed, classify, chunk_rows
        )
    frame = _read_rows(engine, features, conditions, chunk_rows)
    return Window(start=start, end=end, frame=frame)


def outcome_columns(classify: bool) -> list:
    """What ``prediction`` and ``actual`` are read from: the numbers, or for a classifier the
    classes and the probabilities. Only a labelled row's probabilities are read (ROC AUC and
    log loss need its true class; drift sees the predicted class): the database leaves the
    others' JSON unsent, half of a window's rows."""
    if classify:
        return [
            predictions.c.label,
            feedback.c.actual_label,
            case((feedback.c.actual_label.is_not(None), cast(predictions.c.probabilities, Text))),
        ]
    return [predictions.c.prediction, feedback.c.actual]


def _classes(
    rows: Sequence[tuple[str | None, str | None, str | None]],
) -> tuple[np.ndarray, np.ndarray, list[dict[str, float] | None]]:
    """(label, actual label, probabilities JSON) rows as object arrays and dicts (the paired
    read: a rollout step's rows, kept per request for the shadow join)."""
    if not rows:
        return np.empty(0, object), np.empty(0, object), []
    label, actual, proba = zip(*rows, strict=True)
    parsed = [orjson.loads(p) if p else None for p in proba]
    return np.asarray(label, object), np.asarray(actual, object), parsed


def _conditions(model_name, roles, start, end, model_version) -> list:
    conditions = [
        predictions.c.model_name == model_name,
        predictions.c.role.in_(list(roles)),
        predictions.c.ts >= start,
        predictions.c.ts < end,
    ]
    if model_version is not None:
        conditions.append(predictions.c.model_version == str(model_version))
    return conditions


def _read_rows(engine, features: Sequence[str], conditions: list, chunk_rows: int) -> pd.DataFrame:
    """Every row of the window with its features (a regression model's)."""
    query = (
        select(cast(predictions.c.features, Text), *outcome_columns(False))
        .select_from(
            predictions.outerjoin(feedback, feedback.c.request_id == predictions.c.request_id)
        )
        .where(and_(*conditions))
    )
    matrices, preds, actuals = [], [], []
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=chunk_rows).execute(query)
        for rows in result.partitions():
            matrices.append(_parse_features([row[0] for row in rows], features))
            preds.append(np.asarray([row[1] for row in rows], dtype="float64"))
            actuals.append(
                np.asarray([np.nan if row[2] is None else row[2] for row in rows], "float64")
            )
    if not matrices:
        return pd.DataFrame(columns=[*features, PREDICTION, ACTUAL], dtype="float64")
    frame = pd.DataFrame(np.concatenate(matrices), columns=list(features))
    frame[PREDICTION] = np.concatenate(preds)
    frame[ACTUAL] = np.concatenate(actuals)
    return frame


def _read_sampled(
    engine,
    features: Sequence[str],
    span: tuple[datetime, datetime],
    conditions: list,
    sample_rows: int | None,
    seed: int,
    classify: bool,
    chunk_rows: int,
) -> Window:
    """Outcomes of every row (one pass, no feature JSON), then the features of a sample (None:
    of every row), by id."""
    outcomes = (
        select(predictions.c.id, *outcome_columns(classify))
        .select_from(
            predictions.outerjoin(feedback, feedback.c.request_id == predictions.c.request_id)
        )
        .where(and_(*conditions))
    )
    with engine.connect() as conn:
        if classify:
            chunks = _fetch(conn, outcomes, _class_chunk, chunk_rows)
            ids, pred, actual, proba = _class_outcomes(chunks)
        else:
            ids, pred, actual = _numbers(_fetch(conn, outcomes, _number_chunk, chunk_rows))
            proba = None
        picked = np.arange(len(ids))
        if sample_rows is not None and len(ids) > sample_rows:
            rng = np.random.default_rng(seed)
            picked = np.sort(rng.choice(len(ids), sample_rows, replace=False))
        # The window's conditions too: on a log partitioned by day, only its days are searched.
        by_id = select(predictions.c.id, cast(predictions.c.features, Text)).where(
            predictions.c.id.in_(bindparam("ids", expanding=True)), *conditions
        )
        texts: dict[int, str] = {}
        wanted = ids[picked].tolist()
        for lo in range(0, len(wanted), 10_000):
            texts.update(conn.execute(by_id, {"ids": wanted[lo : lo + 10_000]}).tuples().all())
    frame = pd.DataFrame(
        _parse_features([texts.get(i) for i in wanted], features), columns=list(features)
    )
    frame[PREDICTION] = pred[picked]
    frame[ACTUAL] = actual[picked]
    has_label = np.asarray(pd.notna(actual))
    labelled = pd.DataFrame({PREDICTION: pred[has_label], ACTUAL: actual[has_label]})
    return Window(
        start=span[0],
        end=span[1],
        frame=frame,
        total_rows=len(ids),
        labelled_rows=labelled,
        probabilities=proba,
    )


def _fetch(conn, query, convert: Callable[[list[tuple]], Any], chunk_rows: int) -> list:
    """``convert`` of each chunk of the query's rows, fetched from the DBAPI cursor (a
    server-side one on PostgreSQL): SQLAlchemy rows and per-column tuples cost more than the
    database's own scan and join. The statement is rendered with its values inline (they come
    from the spec and the clock)."""
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    raw = conn.connection.driver_connection
    postgres = conn.dialect.name == "postgresql"
    cursor = raw.cursor(name="kubeloop_window") if postgres else raw.cursor()
    chunks = []
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(chunk_rows):
            chunks.append(convert(rows))
    finally:
        cursor.close()
    return chunks


def _number_chunk(rows: list[tuple]) -> np.ndarray:
    return np.array(rows, dtype=np.float64)  # None -> NaN


def _numbers(chunks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(id, prediction, actual) of every row as arrays (actual NaN when NULL)."""
    data = np.concatenate(chunks) if chunks else np.empty((0, 3))
    return data[:, 0].astype(np.int64), data[:, 1].copy(), data[:, 2].copy()


ClassChunk = tuple[np.ndarray, pd.Categorical, pd.Categorical, pd.DataFrame]


def _class_chunk(rows: list[tuple]) -> ClassChunk:
    """(id, label, actual label, probabilities JSON) rows -> ids, the classes as categoricals,
    and the labelled rows' probabilities as a matrix with a column per class."""
    ids, label, actual, proba = zip(*rows, strict=True)
    loads = orjson.loads
    parsed = [loads(t) if t else {} for t, a in zip(proba, actual, strict=True) if a is not None]
    classes = sorted(set().union(*parsed))
    return (
        np.array(ids, dtype=np.int64),
        pd.Categorical(label, categories=sorted(set(label) - {None})),
        pd.Categorical(actual, categories=sorted(set(actual) - {None})),
        pd.DataFrame(_matrix(parsed, len(parsed), classes), columns=classes),
    )


def _class_outcomes(
    chunks: list[ClassChunk],
) -> tuple[np.ndarray, pd.Categorical, pd.Categorical, pd.DataFrame]:
    """Chunks joined: categories are unioned (codes recoded in C), probability columns aligned
    (a class absent from a chunk is NaN there)."""
    if not chunks:
        empty = pd.Categorical([], categories=pd.Index([], dtype=object))
        return np.empty(0, np.int64), empty, empty, pd.DataFrame()
    ids, label, actual, proba = zip(*chunks, strict=True)
    probabilities = pd.concat(proba, ignore_index=True)
    return (
        np.concatenate(ids),
        union_categoricals(label),
        union_categoricals(actual),
        probabilities[sorted(probabilities.columns)],
    )


def count_labelled_since(engine, model_name: str, since: datetime | None) -> int:
    """Feedback rows that arrived after ``since`` for requests this model answered.

    The labels are read by their time (``ix_feedback_ts``) and each one's prediction by
    request id, so the cost follows the labels since the last training, not the whole log.
    SQLite, without statistics, may instead scan every prediction (features included) and look
    its feedback up; the unary ``+`` on ``feedback.request_id`` takes that index out of its
    choices (SQLite's documented way to steer a plan)."""
    feedback_id = (
        literal_column("+feedback.request_id")
        if engine.dialect.name == "sqlite"
        else feedback.c.request_id
    )
    query = (
        select(func.count())
        .select_from(feedback.join(predictions, predictions.c.request_id == feedback_id))
        .where(predictions.c.model_name == model_name, predictions.c.role.in_(SERVED_ROLES))
    )
    if since is not None:
        query = query.where(feedback.c.ts > since)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def read_paired(
    engine,
    model_name: str,
    start: datetime,
    end: datetime,
    roles: Sequence[str],
    task: str = "regression",
) -> pd.DataFrame:
    """Per-request rows of several roles (for shadow and canary comparisons).

    Returns:
        Columns ``request_id``, ``role``, ``model_version``, ``prediction``, ``actual`` (and
        for a classifier, whose prediction and actual are classes, ``probabilities``).
    """
    classify = task == "classification"
    query = (
        select(
            predictions.c.request_id,
            predictions.c.role,
            predictions.c.model_version,
            *outcome_columns(classify),
        )
        .select_from(
            predictions.outerjoin(feedback, feedback.c.request_id == predictions.c.request_id)
        )
        .where(
            predictions.c.model_name == model_name,
            predictions.c.role.in_(list(roles)),
            predictions.c.ts >= start,
            predictions.c.ts < end,
        )
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    columns = ["request_id", "role", "model_version", PREDICTION, ACTUAL]
    if classify:
        frame = pd.DataFrame([tuple(r[:3]) for r in rows], columns=columns[:3])
        pred, actual, proba = _classes([tuple(r[3:]) for r in rows])
        frame[PREDICTION], frame[ACTUAL], frame[PROBABILITIES] = pred, actual, proba
        return frame
    frame = pd.DataFrame(rows, columns=columns)
    frame[ACTUAL] = pd.to_numeric(frame[ACTUAL], errors="coerce")
    return frame
