"""Benchmark: what one prediction-log row costs at each stage, and COPY against the alternative.

    .venv/bin/python bench/log_ship.py [--rows 200000]

Measured in this process, on 10-feature rows in 100-row batches (and 1-row batches for the
request path):

- ``submit``: the request path (``SpoolWriter.submit``), per request;
- ``spool``: batches to one Arrow table and an IPC file (the flush thread), per row;
- ``ship (COPY)``: segment to ``predictions`` columns and ``COPY ... FROM STDIN (FORMAT
  binary)`` into a fresh PostgreSQL database (``--postgres``), per row, with the server's
  time-ordered request ids (UUIDv7) and with random ones (UUIDv4, as the server made before and
  as callers may send), over ``--segments`` segments so the ``request_id`` index grows as it
  does in service; beside the shipper's wall time, the CPU all PostgreSQL processes spent (when
  they run on this machine), which on a shared node is taken from the server; and, time-ordered
  ids, the same rows as CSV (``FORMAT csv``, as the shipper sent them before);
- ``ship (executemany, SQLite)``: the same rows into SQLite;
- ``insert (SQLAlchemy executemany, PostgreSQL)``: the alternative, as the log wrote before: a
  dict per row (features as a dict serialised by orjson) and ``insert()`` through SQLAlchemy.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import uuid_utils

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.postgres import ADMIN_URL, fresh_database  # noqa: E402
from kubeloop.log_store import (  # noqa: E402
    PREDICTION_COLUMNS,
    ensure_schema,
    make_engine,
    predictions,
)
from serving import shipper, spool  # noqa: E402
from serving.prediction_log import LogBatch  # noqa: E402

if TYPE_CHECKING:
    import pyarrow as pa

NAMES = tuple(f"f{i}" for i in range(10))
DATABASE = "kubeloop_bench_log_ship"


UUID7 = "time-ordered ids (UUIDv7)"
ID_SCHEMES = {
    UUID7: lambda: uuid_utils.uuid7().hex,
    "random ids (UUIDv4)": lambda: uuid_utils.uuid4().hex,
}


def batches(rows: int, size: int, make_id: Callable[[], str] = ID_SCHEMES[UUID7]) -> list[LogBatch]:
    rng = np.random.default_rng(0)
    return [
        LogBatch(
            base_id=make_id(),
            ts=time.time(),
            positions=None,
            entity_ids=None,
            feature_names=NAMES,
            features=rng.normal(size=(size, len(NAMES))),
            predictions=rng.normal(size=size),
            model_name="bench",
            model_version="1",
            model_label="V1.0.0",
            role="champion",
        )
        for i in range(rows // size)
    ]


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def postgres_cpu_seconds() -> float | None:
    """CPU time of every PostgreSQL process on this machine (None when there is none)."""
    tick, total, found = os.sysconf("SC_CLK_TCK"), 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.index("(") + 1 : text.rindex(")")] == "postgres":
            fields = text[text.rindex(")") + 2 :].split()
            total, found = total + int(fields[11]) + int(fields[12]), True
    return total / tick if found else None


def ship_binary(engine, name: str, segment: pa.Table) -> None:
    shipper.store_segments(engine, [(name, segment)])


def ship_csv(engine, name: str, segment: pa.Table) -> None:
    """The alternative: the same columns as CSV text, ``COPY ... (FORMAT csv)``."""
    import pyarrow.csv as csv

    columns = ", ".join(PREDICTION_COLUMNS)
    with engine.begin() as conn, conn.connection.driver_connection.cursor() as cursor:
        for offset in range(0, segment.num_rows, shipper.STORE_CHUNK_ROWS):
            buffer = io.BytesIO()
            table = shipper.store_table(segment.slice(offset, shipper.STORE_CHUNK_ROWS))
            csv.write_csv(table, buffer, csv.WriteOptions(include_header=False))
            with cursor.copy(f"COPY predictions ({columns}) FROM STDIN (FORMAT csv)") as copy:
                copy.write(buffer.getbuffer())


def ship_growing(
    url: str,
    n: int,
    segments: int,
    make_id: Callable[[], str],
    ship: Callable[[Any, str, pa.Table], None] = ship_binary,
) -> tuple[float, float]:
    """Ship ``segments`` segments of ``n`` rows into a fresh store; wall seconds per row, and
    PostgreSQL's CPU seconds per row (NaN when it runs elsewhere)."""
    engine = make_engine(url)
    ensure_schema(engine)
    wall, cpu = 0.0, 0.0
    for k in range(segments):
        segment = spool.to_table(batches(n, 100, make_id))
        cpu_before, started = postgres_cpu_seconds(), time.perf_counter()
        ship(engine, f"bench/{k}", segment)
        wall += time.perf_counter() - started
        cpu_after = postgres_cpu_seconds()
        cpu += float("nan") if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    engine.dispose()
    return wall / (n * segments), cpu / (n * segments)


def dict_rows(items: list[LogBatch]) -> list[dict[str, object]]:
    """The alternative: one dict per row, features as a dict (the log before the spool)."""
    out = []
    for b in items:
        ts = datetime.fromtimestamp(b.ts, UTC)
        pairs = zip(b.features.tolist(), b.predictions.tolist(), strict=True)
        for pos, (row, value) in enumerate(pairs):
            out.append(
                {
                    "request_id": f"{b.base_id}-{pos}",
                    "ts": ts,
                    "entity_id": None,
                    "features": dict(zip(b.feature_names, row, strict=True)),
                    "prediction": value,
                    "model_name": b.model_name,
                    "model_version": b.model_version,
                    "model_label": b.model_label,
                    "role": b.role,
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--postgres", default=ADMIN_URL, help="PostgreSQL admin URL")
    parser.add_argument(
        "--segments", type=int, default=5, help="segments of --rows shipped per id scheme"
    )
    args = parser.parse_args()
    n = args.rows
    per_row: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        writer = spool.SpoolWriter(Path(tmp) / "spool", max_bytes=2**40, flush_seconds=3600)
        writer.open()
        for size in (1, 100):
            requests = batches(min(n, 100_000 * size), size)
            started = time.perf_counter()
            for b in requests:
                writer.submit(b)
            seconds = time.perf_counter() - started
            per_row[f"submit, {size}-row request (per request)"] = seconds / len(requests)
            writer.flush()  # not timed here: spool figures below
        items = batches(n, 100)
        spooled = Path(tmp) / "one.arrow"

        def spool_once() -> None:
            import pyarrow as pa

            table = spool.to_table(items)
            with pa.OSFile(str(spooled), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)

        per_row["spool (Arrow table + IPC file), per row"] = timed(spool_once) / n
        segment = spool.read_segment(spooled)
        sqlite = make_engine(f"sqlite:///{tmp}/log.db")
        ensure_schema(sqlite)
        per_row["ship (executemany, SQLite), per row"] = (
            timed(lambda: shipper.store_segments(sqlite, [("bench/sqlite", segment)])) / n
        )
        sqlite.dispose()
        ships = [("ship (COPY, PostgreSQL)", "that", scheme, ship_binary) for scheme in ID_SCHEMES]
        ships.append(("alternative: ship (COPY as CSV, PostgreSQL)", "the CSV", UUID7, ship_csv))
        for label, of, scheme, ship in ships:
            url = fresh_database(DATABASE, args.postgres)
            wall, cpu = ship_growing(url, n, args.segments, ID_SCHEMES[scheme], ship)
            per_row[f"{label}, {scheme}, per row"] = wall
            per_row[f"PostgreSQL CPU for {of}, {scheme}, per row"] = cpu
        engine = make_engine(fresh_database(DATABASE, args.postgres))
        ensure_schema(engine)

        def insert_dicts() -> None:
            rows = dict_rows(items)
            with engine.begin() as conn:
                for lo in range(0, len(rows), 500):
                    conn.execute(predictions.insert(), rows[lo : lo + 500])

        per_row["alternative: dict rows + SQLAlchemy insert (PostgreSQL), per row"] = (
            timed(insert_dicts) / n
        )
        engine.dispose()
        writer.close()
        writer.release()
    print(f"{n:,} rows, load average {os.getloadavg()[0]:.1f}\n")
    print("| stage | µs |\n| --- | ---: |")
    for label, seconds in per_row.items():
        print(f"| {label} | {seconds * 1e6:.2f} |")


if __name__ == "__main__":
    main()
