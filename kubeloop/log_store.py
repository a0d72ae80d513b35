"""The prediction log's tables and engine: the one definition the server writes and monitoring
reads.

``predictions`` holds every prediction (champion, canary and shadow alike, told apart by
``role``); ``feedback`` holds ground truth sent later for a request id; ``log_segments`` names
the server's spool segments already stored (written in the same transaction as their rows, so
a segment shipped twice, after a crash between commit and delete, is recognised and skipped).
All live in SQLite on the embedded default and in PostgreSQL on a cluster
(``KUBELOOP_PREDICTION_LOG_URL``).

Classification, in the same tables: a row of ``predictions`` keeps ``prediction`` a number
(the probability of the predicted class: the model's confidence, so the column stays NOT NULL
and numeric for every reader), ``label`` the predicted class and ``probabilities`` every
class's probability as ``{class: p}`` JSON, like ``features``. JSON rather than a column per
class: the class set belongs to a model version and changes with it, and the live ROC AUC and
log loss need the whole distribution, not only the winner's share. ``feedback`` holds a
number in ``actual`` (regression) or the true class in ``actual_label`` (classification).
Class labels are stored as strings (an integer class 3 as ``"3"``), as the server's JSON
answers name them. Regression rows leave the new columns null: nothing changes for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

ROLES = ("champion", "canary", "shadow")


def _predictions(md: MetaData, *, partitioned: bool = False) -> Table:
    """The ``predictions`` table; ``partitioned``: as PostgreSQL creates it, by range of
    ``ts`` (``kubeloop.log_partitions``), whose primary key must then hold ``ts`` too."""
    return Table(
        "predictions",
        md,
        Column(
            "id",
            BigInteger().with_variant(Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        Column("request_id", String(64), nullable=False, index=True),
        Column("ts", DateTime(timezone=True), nullable=False, primary_key=partitioned),
        Column("entity_id", String(128), nullable=True),
        Column("features", JSON, nullable=False),  # {feature name: value} as the model saw them
        Column("prediction", Float, nullable=False),
        Column("model_name", String(128), nullable=False),
        Column("model_version", String(32), nullable=False),  # registry version number
        Column("model_label", String(64), nullable=False),  # V<tag>.<manual>.<auto>
        Column("role", String(16), nullable=False),  # one of ROLES
        Column("label", String(128), nullable=True),  # classification: the predicted class
        Column("probabilities", JSON, nullable=True),  # classification: {class: probability}
        Index("ix_predictions_ts_role", "ts", "role"),
        postgresql_partition_by="RANGE (ts)" if partitioned else None,
    )


predictions = _predictions(metadata)

feedback = Table(
    "feedback",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("actual", Float, nullable=True),  # regression: the observed value
    Column("actual_label", String(128), nullable=True),  # classification: the true class
    # Monitoring counts the labels that arrived since the last training from here: without
    # it that count joins every prediction with its feedback (41 s of a 10M-row run).
    Index("ix_feedback_ts", "ts"),
)

log_segments = Table(
    "log_segments",
    metadata,
    Column("name", String(255), primary_key=True),  # <run id>/<segment file>
    Column("rows", Integer, nullable=False),
    Column("shipped_at", DateTime(timezone=True), nullable=False, index=True),
)

# The columns the server's shipper fills, in this order (COPY and executemany alike).
PREDICTION_COLUMNS = (
    "request_id",
    "ts",
    "entity_id",
    "features",
    "prediction",
    "model_name",
    "model_version",
    "model_label",
    "role",
    "label",
    "probabilities",
)

# Columns added after the first release: (table, column, SQL type); an older database gets them.
ADDED_COLUMNS = (
    ("predictions", "label", "VARCHAR(128)"),
    ("predictions", "probabilities", "JSON"),
    ("feedback", "actual_label", "VARCHAR(128)"),
)


def create_all(engine) -> None:
    """Create the tables if missing (idempotent; safe from several workers). On PostgreSQL
    ``predictions`` is partitioned by day (``kubeloop.log_partitions``), with a default
    partition; a log created before stays as it is."""
    if engine.dialect.name != "postgresql":
        metadata.create_all(engine, checkfirst=True)
        return
    from kubeloop.log_partitions import DEFAULT, LOCK_KEY, PARENT, is_partitioned

    with engine.begin() as conn:  # one creator at a time: DDL is transactional here
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(key)s)", {"key": LOCK_KEY})
        metadata.create_all(conn, tables=[feedback, log_segments], checkfirst=True)
        _predictions(MetaData(), partitioned=True).create(conn, checkfirst=True)
        if is_partitioned(conn):
            conn.exec_driver_sql(
                f"CREATE TABLE IF NOT EXISTS {DEFAULT} PARTITION OF {PARENT} DEFAULT"
            )


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def make_engine(url: str):
    """A SQLAlchemy engine for the log: orjson for JSON; SQLite in WAL mode with a busy timeout
    so several workers can share one file."""
    from sqlalchemy import create_engine, event, make_url

    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, json_serializer=_json, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(
        url,
        json_serializer=_json,
        pool_pre_ping=True,
        pool_size=2,
        max_overflow=2,
        connect_args={"connect_timeout": 5},
    )


def ensure_schema(engine) -> None:
    """Create the log tables if missing; a concurrent creator (another worker) is not an error."""
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    try:
        create_all(engine)
        upgrade(engine)
    except (IntegrityError, OperationalError, ProgrammingError) as exc:
        if "already exists" not in str(exc) and "duplicate column" not in str(exc):
            raise


def upgrade(engine) -> None:
    """Bring a log written by an older server up to this schema: add the classification
    columns and the index on ``feedback.ts``, and, on PostgreSQL, let ``feedback.actual`` be
    null (a class label goes to ``actual_label``). SQLite cannot relax a NOT NULL in place: an
    embedded log from before classification takes regression feedback only (``rm -rf
    .kubeloop`` starts afresh)."""
    from sqlalchemy import inspect

    inspector = inspect(engine)
    present = {
        table: {c["name"]: c for c in inspector.get_columns(table)}
        for table in ("predictions", "feedback")
    }
    with engine.begin() as conn:
        for table, column, sql_type in ADDED_COLUMNS:
            if column not in present[table]:
                conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")
        if engine.dialect.name == "postgresql" and not present["feedback"]["actual"]["nullable"]:
            conn.exec_driver_sql("ALTER TABLE feedback ALTER COLUMN actual DROP NOT NULL")
        conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_feedback_ts ON feedback (ts)")
