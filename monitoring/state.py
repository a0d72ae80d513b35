"""The persisted retraining record: one incident launches one run.

Two tables beside the prediction log (same database: SQLite on the embedded default,
PostgreSQL on a cluster, so every CronJob run sees the same record):

- ``kubeloop_retraining``: one row per model, the launch slot: ``idle`` or ``running``, when the
  last run was launched, by which launcher, why, and how it ended.
- ``kubeloop_retraining_events``: every decision (launched, refused by cooldown, superseded,
  finished, failed), for the audit trail, the report and the lineage of superseded runs.

A run, once started, is never stopped by a person; only a newer trigger supersedes it (the
requirement). So a claim is granted even while a run is in progress (past monitoring's cooldown,
for monitoring), and names that run (``Claim.superseded``) for the caller to terminate. A claim
is one transaction that holds the slot's row from its first read to its commit, so racing jobs
queue: of monitoring jobs racing, the first launches and the others find its cooldown.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
from sqlalchemy.engine import Connection
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
    # launched (monitoring)|triggered (others)|cooldown|superseded|finished|failed
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
        return _read(conn, model_name)


def _read(conn, model_name: str) -> Record | None:
    row = conn.execute(select(retraining).where(retraining.c.model_name == model_name)).first()
    if row is None:
        return None
    values = dict(row._mapping)
    for key in ("launched_at", "finished_at"):
        values[key] = _utc(values[key])
    return Record(**values)


@contextmanager
def _holding_the_slot(engine, model_name: str) -> Iterator[Connection]:
    """One transaction that holds the model's slot row from before its first read to its commit:
    racing claims queue behind it, so each one reads what the one before it decided (its
    launch, hence its cooldown). PostgreSQL locks the row (``FOR UPDATE``); SQLite has no row
    locks, so the claim takes the database's write lock first (``BEGIN IMMEDIATE``)."""
    with engine.begin() as conn:
        try:
            with conn.begin_nested():
                conn.execute(insert(retraining).values(model_name=model_name, status=IDLE))
        except IntegrityError:
            pass  # the row exists
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(
                select(retraining.c.model_name)
                .where(retraining.c.model_name == model_name)
                .with_for_update()
            )
        yield conn
        conn.commit()


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


def _last_monitoring_launch(conn, model_name: str) -> datetime | None:
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
    with _holding_the_slot(engine, model_name) as conn:
        before = _read(conn, model_name)
        last = _last_monitoring_launch(conn, model_name) if cooldown > timedelta(0) else None
        if last is not None and last > now - cooldown:
            why = f"cooldown until {last + cooldown:%Y-%m-%d %H:%M:%S} UTC"
            run_id = before.run_id if before else None
            _event(conn, model_name, "cooldown", now, run_id=run_id, detail=f"{reason} ({why})")
            return Claim(False, why, before)
        conn.execute(
            update(retraining)
            .where(retraining.c.model_name == model_name)
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
        _event(
            conn,
            model_name,
            "launched" if trigger == "monitoring" else "triggered",
            now,
            detail=reason,
        )
        record = _read(conn, model_name)
    superseded = before if _in_progress(before, now, run_timeout) else None
    if superseded is None:
        return Claim(True, "granted", record)
    why = f"supersedes run {superseded.run_id or '(starting)'} ({superseded.reason})"
    return Claim(True, why, record, superseded)


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


def started(engine, model_name: str, run_id: str, *, launched_at: datetime) -> bool:
    """Record the handle of the run the claim made at ``launched_at`` started. False when a
    newer claim has taken the slot since (this run was superseded while starting): nothing is
    written, and the caller stops its run."""
    with engine.begin() as conn:
        return (
            conn.execute(
                update(retraining)
                .where(
                    retraining.c.model_name == model_name,
                    retraining.c.status == RUNNING,
                    retraining.c.launched_at == launched_at,
                )
                .values(run_id=run_id)
            ).rowcount
            == 1
        )


def finish(
    engine,
    model_name: str,
    *,
    now: datetime,
    outcome: str,
    failed: bool = False,
    run_id: str | None = None,
    launched_at: datetime | None = None,
) -> None:
    """Free the slot (the cooldown still counts from the launch) and record how the run ended.

    Only the run's own slot: by ``run_id`` once it has one, by its claim's ``launched_at``
    before (a launch that fails after a newer trigger took the slot). A superseded run that
    ends late must not free its successor's slot."""
    conditions = [retraining.c.model_name == model_name, retraining.c.status == RUNNING]
    if run_id is not None:
        conditions.append(retraining.c.run_id == run_id)
    if launched_at is not None:
        conditions.append(retraining.c.launched_at == launched_at)
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
