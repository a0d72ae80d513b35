"""Schema of the prediction log: the one definition the server writes and monitoring reads.

``predictions`` holds every prediction (champion, canary and shadow alike, told apart by
``role``); ``feedback`` holds ground truth sent later for a request id. Both live in SQLite on
the embedded default and in PostgreSQL on a cluster (``KUBELOOP_PREDICTION_LOG_URL``).
"""

from __future__ import annotations

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

predictions = Table(
    "predictions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("request_id", String(64), nullable=False, index=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("entity_id", String(128), nullable=True),
    Column("features", JSON, nullable=False),  # {feature name: value} as the model saw them
    Column("prediction", Float, nullable=False),
    Column("model_name", String(128), nullable=False),
    Column("model_version", String(32), nullable=False),  # registry version number
    Column("model_label", String(64), nullable=False),  # V<tag>.<manual>.<auto>
    Column("role", String(16), nullable=False),  # one of ROLES
    Index("ix_predictions_ts_role", "ts", "role"),
)

feedback = Table(
    "feedback",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("actual", Float, nullable=False),
)


def create_all(engine) -> None:
    """Create the tables if missing (idempotent; safe from several workers)."""
    metadata.create_all(engine, checkfirst=True)
