"""Production's labelled predictions as training rows (``retraining.labelled_hours``).

A prediction a caller received (role champion or canary) whose ground truth came back by
request id is a training row with exactly the features the model saw: the log recorded them at
prediction time, so no point-in-time join is needed ("log and wait"). Production's rows
(``rollout.production_model``) are taken where the log holds any, else the project model's
(``labelled_models`` says why). The ingest step reads them
from the log store itself (the database monitoring reads: PostgreSQL on a cluster, where every
step is its own pod), checks them with the same data-quality rules as the data source, and
writes them into the dataset it versions with DVC, next to the source's rows:

- ``kubeloop_origin`` tells the two apart (``source`` / ``prediction_log``);
- a logged row keeps the entity id (null for a request that sent its features), the prediction
  time as its event time and the ground truth as its target; each feature it was served with is
  the column ``logged.<feature>``, never the raw column of the same name (a feature is not a
  raw value even when it shares its name);
- one row per entity and time: the latest logged wins (a retried batch, a row logged twice);
- one row per entity, features and label: an entity asked for again and again with unchanged
  features (features by id, answered from the online store) is one sample, not one per request.
  Copies would outweigh the history, and the newest of them, held out, would score copies of
  training rows (a user's trial: 30 copies of each of 180 rows, held-out F1 1.0).

The features step gives Feast only the source's rows; the train step joins those with Feast and
adds the logged rows as they are (``split``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pandas as pd

from kubeloop.spec import ColumnRule, ProjectSpec

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

SERVED_ROLES = ("champion", "canary")  # rows whose prediction a caller received
ORIGIN = "kubeloop_origin"
FROM_SOURCE = "source"
FROM_LOG = "prediction_log"
LOGGED = "logged."


def read_labelled(
    engine: Engine,
    model_name: str,
    start: datetime,
    end: datetime,
    task: str = "regression",
) -> pd.DataFrame:
    """Served predictions of ``model_name`` made in ``[start, end)`` that have ground truth.

    Returns:
        One row per prediction, in log order: ``entity_id`` (text or None), ``ts`` (UTC),
        ``actual`` (a number; for ``task="classification"`` the true class as the log keeps
        it, text) and one column per logged feature. Empty when the log has no tables yet (no
        server ever wrote to it).
    """
    from sqlalchemy import Text, cast, inspect, select

    from kubeloop.log_store import feedback, predictions

    tables = inspect(engine)
    if not (tables.has_table("predictions") and tables.has_table("feedback")):
        return pd.DataFrame(columns=["entity_id", "ts", "actual"])
    classify = task == "classification"
    truth = feedback.c.actual_label if classify else feedback.c.actual
    query = (
        select(
            predictions.c.entity_id,
            predictions.c.ts,
            truth,
            cast(predictions.c.features, Text),
        )
        .select_from(predictions.join(feedback, feedback.c.request_id == predictions.c.request_id))
        .where(
            predictions.c.model_name == model_name,
            predictions.c.role.in_(SERVED_ROLES),
            predictions.c.ts >= start,
            predictions.c.ts < end,
            truth.is_not(None),
        )
        .order_by(predictions.c.id)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame(
        {
            "entity_id": [r[0] for r in rows],
            "ts": pd.to_datetime([r[1] for r in rows], utc=True),
            "actual": pd.array([r[2] for r in rows], dtype="object" if classify else "float64"),
        }
    )
    features = pd.DataFrame([orjson.loads(r[3]) for r in rows], index=frame.index)
    return pd.concat([frame, features], axis=1)


def labelled_models(spec: ProjectSpec) -> tuple[str, ...]:
    """The registered models whose served rows may feed training, production's first.

    In the two-environment setup production's callers are answered by
    ``rollout.production_model`` and its rows are logged under that name; the project's model
    is what dev (one environment does everything) serves, and staging. Staging's labelled rows,
    where it has any, are a mirror of production's requests or test traffic: a mirrored request
    has its own request id and time there, so de-duplication by entity and time could not keep
    it from counting twice.
    """
    return tuple(name for name in (spec.rollout.production_model, spec.model_name) if name)


def read_production_labelled(
    engine: Engine, spec: ProjectSpec, start: datetime, end: datetime
) -> tuple[str | None, pd.DataFrame]:
    """The labelled served rows a training run takes (``retraining.labelled_hours``):
    production's (``rollout.production_model``) when the log holds any in ``[start, end)``,
    else the project model's (dev, one environment, or a production not live yet).

    Returns:
        The model whose rows they are (None when neither has any) and ``read_labelled``'s rows.
    """
    rows = pd.DataFrame(columns=["entity_id", "ts", "actual"])
    for name in labelled_models(spec):
        rows = read_labelled(engine, name, start, end, task=spec.task)
        if len(rows):
            return name, rows
    return None, rows


def training_rows(labelled: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """``read_labelled``'s rows in the dataset's columns, one per entity and time (the latest
    logged wins; rows without an entity id are distinct requests), and one per entity (or
    none), features and label: the latest of such repeats stays."""
    features = [c for c in labelled.columns if c not in ("entity_id", "ts", "actual")]
    out = pd.DataFrame(
        {
            spec.entity_key: labelled["entity_id"],
            spec.timestamp: pd.to_datetime(labelled["ts"], utc=True).dt.as_unit("us"),
            spec.target: labelled["actual"],
            **{LOGGED + name: labelled[name] for name in features},
        }
    )
    keyed = out[spec.entity_key].notna()
    latest = out[keyed].drop_duplicates([spec.entity_key, spec.timestamp], keep="last")
    out = pd.concat([latest, out[~keyed]]).sort_index()
    sample = [spec.entity_key, spec.target, *(LOGGED + name for name in features)]
    out = out.drop_duplicates(sample, keep="last").reset_index(drop=True)
    out[ORIGIN] = FROM_LOG
    return out


def rules(spec: ProjectSpec, rows: pd.DataFrame) -> dict[str, ColumnRule]:
    """The data-quality rules logged rows must pass: the spec's own for the entity key (which
    may be missing: a request that sent its features names none) and the target, a timestamp,
    and a number in every logged feature of every row."""
    declared = spec.data.columns
    key = declared.get(spec.entity_key, ColumnRule(type="string"))
    found: dict[str, ColumnRule] = {
        spec.entity_key: key.model_copy(update={"nullable": True, "max_null_fraction": 1.0}),
        spec.timestamp: ColumnRule(type="datetime", nullable=False),
        spec.target: declared.get(spec.target, ColumnRule(type="float", nullable=False)),
    }
    for column in rows.columns:
        if column.startswith(LOGGED):
            found[column] = ColumnRule(type="float", nullable=False)
    return found


def as_declared_types(rows: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """Logged entity ids and true classes (text in the log) in the types the spec declares
    for the key and the target, once the rules passed: a class 3 is the source's 3, not
    "3"."""
    columns = {spec.entity_key: "Int64", spec.target: "int64"}
    for name, integral in columns.items():
        rule = spec.data.columns.get(name)
        if rule is not None and rule.type == "int":
            rows = rows.assign(**{name: pd.to_numeric(rows[name]).astype(integral)})
        elif rule is not None and rule.type == "float":
            rows = rows.assign(**{name: pd.to_numeric(rows[name]).astype("float64")})
    return rows


def split(dataset: pd.DataFrame, spec: ProjectSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A dataset's source rows (the spec's raw columns; the caller restores their types) and
    logged rows (entity, time, target, ``logged.*``, origin: the train step tells them apart
    by it); a dataset without logged rows is all source."""
    if ORIGIN not in dataset.columns:
        return dataset, dataset.iloc[0:0]
    from_log = dataset[ORIGIN] == FROM_LOG
    logged_columns = [c for c in dataset.columns if c.startswith(LOGGED)]
    source = dataset.loc[~from_log, [c for c in spec.data.columns if c in dataset.columns]]
    kept = [spec.entity_key, spec.timestamp, spec.target, *logged_columns, ORIGIN]
    logged = dataset.loc[from_log, kept]
    return source.reset_index(drop=True), logged.reset_index(drop=True)


def is_logged(frame: pd.DataFrame) -> pd.Series:
    """Which rows of a dataset or of the labels came from the prediction log."""
    if ORIGIN not in frame.columns:
        return pd.Series(False, index=frame.index)
    return frame[ORIGIN] == FROM_LOG


def source_labels(labels: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """The labels of the source's rows, for Feast's join: entity, time, target, the key back in
    its plain type (beside logged rows without an id it was widened to a nullable one)."""
    out = labels.loc[~is_logged(labels), [spec.entity_key, spec.timestamp, spec.target]]
    if out[spec.entity_key].dtype == "Int64" and out[spec.entity_key].notna().all():
        out = out.astype({spec.entity_key: "int64"})
    return out.reset_index(drop=True)


def served_rows(logged: pd.DataFrame, spec: ProjectSpec, features: list[str]) -> pd.DataFrame:
    """Logged rows as training rows: entity, time, target and the model's ``features`` as
    they were served. A feature the log does not hold is an error naming it (the model's
    inputs changed since those predictions)."""
    from kubeloop.errors import SpecError

    if logged.empty:
        return pd.DataFrame(columns=[spec.entity_key, spec.timestamp, spec.target, *features])
    missing = [f for f in features if LOGGED + f not in logged.columns]
    if missing:
        raise SpecError(
            f"retraining.labelled_hours: the logged predictions lack the features {missing} "
            "(the model's inputs changed since); shorten the window or leave it unset",
            field="retraining.labelled_hours",
        )
    out = logged[[spec.entity_key, spec.timestamp, spec.target]].copy()
    for name in features:
        out[name] = logged[LOGGED + name].astype("float64")
    return out


def combine(joined: pd.DataFrame, served: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """The source's training rows (Feast's join) and the served ones; where both hold an entity
    at the same time, the served row stays (its label is the newer truth)."""
    if served.empty:
        return joined
    times = served[spec.timestamp]
    served = served.assign(**{spec.timestamp: _like(times, joined[spec.timestamp])})
    keys = [spec.entity_key, spec.timestamp]
    taken = pd.MultiIndex.from_frame(served.loc[served[spec.entity_key].notna(), keys])
    kept = joined.loc[~pd.MultiIndex.from_frame(joined[keys]).isin(taken)]
    return pd.concat([kept, served], ignore_index=True)


def _like(times: pd.Series, reference: pd.Series) -> pd.Series:
    """``times`` (UTC) in ``reference``'s representation: its zone and unit, or naive UTC.
    Offline stores differ: Feast's PostgreSQL store gives the join's timestamps back in another
    representation than the logged rows', and pandas cannot sort the two in one column."""
    utc = pd.to_datetime(times, utc=True)
    target = reference.dtype
    if isinstance(target, pd.DatetimeTZDtype):
        return utc.astype(target)
    if target.kind == "M":
        return utc.dt.tz_localize(None).astype(target)
    return utc


def source_rows(path: str | Path) -> int:
    """Rows of a versioned dataset file that came from the data source (what the new-data
    trigger compares with the source), without reading more than the origin column."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path)
    if ORIGIN not in meta.schema_arrow.names:
        return meta.metadata.num_rows
    origin = pq.read_table(path, columns=[ORIGIN])[ORIGIN]
    return int(pc.sum(pc.not_equal(origin, FROM_LOG)).as_py() or 0)
