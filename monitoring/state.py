"""The persisted retraining record: one incident launches one run.

Two tables beside the prediction log (same database: SQLite on the embedded default,
PostgreSQL on a cluster, so every CronJob run sees the same record):

- ``kubeloop_retraining``: one row per model, the launch slot: ``idle`` or ``running``, when the
  last run was launched, by which launcher, why, and how it ended.
- ``kubeloop_retraining_events``: every decision (launched, refused by cooldown, refused because
  a run is in progress, finished, failed), for the audit trail and the report.

Claiming the slot is a single conditional ``UPDATE`` (``... WHERE status <> 'running' AND
launched_at <= now - cooldown``): of two monitoring jobs racing, exactly one sees a row count
of 1, so concurrent triggers neither duplicate a run nor supersede the one in progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

metadata = MetaData()

IDLE, RUNNING = "idle", "running"

retraining = Table(
    "kubeloop_retraining",
    metadata,
    Column("model_name", String(128), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("launcher", String(16), nullable=True),
    Column("run_id", String(256), nullable=True),  # the launcher's handle of the run
    Column("reason", String(2000), nullable=True),
    Column("launched_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("outcome", String(500), nullable=True),  # registered V-name, "rejected", "failed: .."
)

events = Table(
    "kubeloop_retraining_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("model_name", String(128), nullable=False, index=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("action", String(32), nullable=False),  # launched|cooldown|in_progress|finished|failed
    Column("run_id", String(256), nullable=True),
    Column("detail", String(2000), nullable=True),
)


def create_all(engine) -> None:
    metadata.create_all(engine, checkfirst=True)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: everything here is written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    model_name: str
    status: str
    launcher: str | None
    run_id: str | None
    reason: str | None
    launched_at: datetime | None
    finished_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class Claim:
    """The outcome of asking for the launch slot."""

    granted: bool
    why: str  # "granted", or why not ("cooldown until ...", "run ... in progress since ...")
    record: Record | None


def read(engine, model_name: str) -> Record | None:
    with engine.connect() as conn:
        row = conn.execute(select(retraining).where(retraining.c.model_name == model_name)).first()
    if row is None:
        return None
    values = dict(row._mapping)
    for key in ("launched_at", "finished_at"):
        values[key] = _utc(values[key])
    return Record(**values)


def _event(conn, model_name: str, action: str, now: datetime, run_id=None, detail=None) -> None:
    conn.execute(
        insert(events).values(
            model_name=model_name, ts=now, action=action, run_id=run_id, detail=detail
        )
    )


def history(engine, model_name: str) -> list[dict]:
    """Every recorded decision of a model, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(events).where(events.c.model_name == model_name).order_by(events.c.id)
        ).all()
    return [{**dict(r._mapping), "ts": _utc(r.ts)} for r in rows]


def claim(
    engine,
    model_name: str,
    *,
    now: datetime,
    cooldown: timedelta,
    run_timeout: timedelta,
    launcher: str,
    reason: str,
) -> Claim:
    """Take the launch slot if no run is in progress and the cooldown has passed.

    A run still ``running`` after ``run_timeout`` is considered lost and no longer blocks.
    """
    create_all(engine)
    with engine.begin() as conn:
        try:
            with conn.begin_nested():
                conn.execute(insert(retraining).values(model_name=model_name, status=IDLE))
        except IntegrityError:
            pass  # the row exists
    granted_update = (
        update(retraining)
        .where(
            retraining.c.model_name == model_name,
            or_(retraining.c.status != RUNNING, retraining.c.launched_at <= now - run_timeout),
            or_(retraining.c.launched_at.is_(None), retraining.c.launched_at <= now - cooldown),
        )
        .values(
            status=RUNNING,
            launcher=launcher,
            run_id=None,
            reason=reason,
            launched_at=now,
            finished_at=None,
            outcome=None,
        )
    )
    with engine.begin() as conn:
        granted = conn.execute(granted_update).rowcount == 1
        if granted:
            _event(conn, model_name, "launched", now, detail=reason)
    record = read(engine, model_name)
    if granted:
        return Claim(True, "granted", record)
    assert record is not None and record.launched_at is not None
    if record.status == RUNNING and record.launched_at > now - run_timeout:
        why = (
            f"retraining run {record.run_id or '(starting)'} in progress since "
            f"{record.launched_at:%Y-%m-%d %H:%M:%S} UTC"
        )
        action = "in_progress"
    else:
        why = f"cooldown until {record.launched_at + cooldown:%Y-%m-%d %H:%M:%S} UTC"
        action = "cooldown"
    with engine.begin() as conn:
        _event(conn, model_name, action, now, run_id=record.run_id, detail=f"{reason} ({why})")
    return Claim(False, why, record)


def started(engine, model_name: str, run_id: str) -> None:
    """Record the launcher's handle of the run that holds the slot."""
    with engine.begin() as conn:
        conn.execute(
            update(retraining)
            .where(retraining.c.model_name == model_name, retraining.c.status == RUNNING)
            .values(run_id=run_id)
        )


def finish(
    engine,
    model_name: str,
    *,
    now: datetime,
    outcome: str,
    failed: bool = False,
    run_id: str | None = None,
) -> None:
    """Free the slot (the cooldown still counts from the launch) and record how the run ended."""
    conditions = [retraining.c.model_name == model_name, retraining.c.status == RUNNING]
    if run_id is not None:
        conditions.append(or_(retraining.c.run_id == run_id, retraining.c.run_id.is_(None)))
    with engine.begin() as conn:
        changed = conn.execute(
            update(retraining)
            .where(and_(*conditions))
            .values(status=IDLE, finished_at=now, outcome=outcome[:500])
        ).rowcount
        if changed:
            _event(
                conn,
                model_name,
                "failed" if failed else "finished",
                now,
                run_id=run_id,
                detail=outcome,
            )


def utcnow() -> datetime:
    return datetime.now(UTC)
