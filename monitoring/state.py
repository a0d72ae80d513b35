"""The persisted retraining record: one incident launches one run.

Two tables beside the prediction log (same database: SQLite on the embedded default,
PostgreSQL on a cluster, so every CronJob run sees the same record):

- ``kubeloop_retraining``: one row per model, the launch slot: ``idle`` or ``running``, when the
  last run was launched, by which launcher, why, and how it ended.
- ``kubeloop_retraining_events``: every decision (launched, refused by cooldown, superseded,
  finished, failed), for the audit trail, the report and the lineage of superseded runs.

A run, once started, is never stopped by a person; only a newer trigger supersedes it (the
requirement). So a claim is granted even while a run is in progress (past monitoring's cooldown,
for monitoring), and names that run (``Claim.superseded``) for the caller to terminate. Claiming
is one conditional ``UPDATE`` that checks the slot is still as read (same status and run): of
two jobs racing, exactly one sees a row count of 1, so concurrent triggers never start two runs.
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
    func,
    insert,
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
    # launched (monitoring)|triggered (others)|cooldown|raced|superseded|finished|failed
    Column("action", String(32), nullable=False),
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
    why: str  # "granted", "supersedes run ...", or why not ("cooldown until ...")
    record: Record | None
    superseded: Record | None = None  # the run in progress this claim replaces: terminate it


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


def _in_progress(record: Record | None, now: datetime, run_timeout: timedelta) -> bool:
    """A run still ``running`` after ``run_timeout`` is considered lost: nothing to supersede."""
    return (
        record is not None
        and record.status == RUNNING
        and record.launched_at is not None
        and record.launched_at > now - run_timeout
    )


def _last_monitoring_launch(engine, model_name: str) -> datetime | None:
    with engine.connect() as conn:
        last = conn.execute(
            select(func.max(events.c.ts)).where(
                events.c.model_name == model_name, events.c.action == "launched"
            )
        ).scalar()
    return _utc(last)


def claim(
    engine,
    model_name: str,
    *,
    now: datetime,
    cooldown: timedelta,
    run_timeout: timedelta,
    launcher: str,
    reason: str,
    trigger: str = "monitoring",
) -> Claim:
    """Take the launch slot; a run still in progress is superseded (``Claim.superseded``),
    never waited for.

    Only monitoring keeps a cooldown, counted from its own last launch (``launched`` events):
    the other triggers (manual, schedule, new data, merge; recorded as ``triggered``) are
    deliberate, pass no cooldown, and do not hold monitoring back either.
    """
    create_all(engine)
    with engine.begin() as conn:
        try:
            with conn.begin_nested():
                conn.execute(insert(retraining).values(model_name=model_name, status=IDLE))
        except IntegrityError:
            pass  # the row exists
    last = _last_monitoring_launch(engine, model_name) if cooldown > timedelta(0) else None
    if last is not None and last > now - cooldown:
        record = read(engine, model_name)
        why = f"cooldown until {last + cooldown:%Y-%m-%d %H:%M:%S} UTC"
        with engine.begin() as conn:
            _event(
                conn,
                model_name,
                "cooldown",
                now,
                run_id=record.run_id if record else None,
                detail=f"{reason} ({why})",
            )
        return Claim(False, why, record)
    before = read(engine, model_name)
    assert before is not None
    same_slot = [retraining.c.status == before.status]
    same_slot.append(
        retraining.c.run_id.is_(None)
        if before.run_id is None
        else retraining.c.run_id == before.run_id
    )
    granted_update = (
        update(retraining)
        .where(retraining.c.model_name == model_name, *same_slot)
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
    superseded = before if _in_progress(before, now, run_timeout) else None
    action = "launched" if trigger == "monitoring" else "triggered"
    with engine.begin() as conn:
        granted = conn.execute(granted_update).rowcount == 1
        if granted:
            _event(conn, model_name, action, now, detail=reason)
    record = read(engine, model_name)
    if granted:
        if superseded is None:
            return Claim(True, "granted", record)
        why = f"supersedes run {superseded.run_id or '(starting)'} ({superseded.reason})"
        return Claim(True, why, record, superseded)
    # Another trigger changed the slot between the read and the update: one claim per moment.
    last = _last_monitoring_launch(engine, model_name)
    if cooldown > timedelta(0) and last is not None and last > now - cooldown:
        why, action = f"cooldown until {last + cooldown:%Y-%m-%d %H:%M:%S} UTC", "cooldown"
    else:
        why, action = "another trigger claimed the slot at the same moment", "raced"
    with engine.begin() as conn:
        _event(
            conn,
            model_name,
            action,
            now,
            run_id=record.run_id if record else None,
            detail=f"{reason} ({why})",
        )
    return Claim(False, why, record)


def superseded(engine, model_name: str, *, old_run: str, new_run: str, now: datetime) -> None:
    """Record that ``new_run`` replaced ``old_run`` (the lineage of superseded runs)."""
    with engine.begin() as conn:
        _event(conn, model_name, "superseded", now, run_id=old_run, detail=f"by {new_run}")


def supersessions(engine, model_name: str) -> dict[str, str]:
    """Which run superseded which: ``{old run: new run}``, from the events."""
    return {
        e["run_id"]: e["detail"].removeprefix("by ")
        for e in history(engine, model_name)
        if e["action"] == "superseded" and e["run_id"]
    }


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
    if run_id is not None:  # a superseded run that ends late must not free its successor's slot
        conditions.append(retraining.c.run_id == run_id)
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
