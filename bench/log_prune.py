"""Benchmark: how fast retention (``kubeloop log prune``) empties a big prediction log.

    .venv/bin/python bench/log_prune.py [--rows 2000000]

Fills a fresh PostgreSQL database (``--postgres``) and an SQLite file through the shipper's own
path with ``--rows`` 10-feature rows, the older half 100 days old and the newer half new, then
prunes with a 90-day retention and prints the rows deleted per second, the day partitions
dropped, the longest step (a dropped partition or a batch: how long one transaction holds its
rows, what a concurrent COPY or monitoring read could wait on), the first and the last five
steps' mean (whether a batch slows down as deleted rows pile up ahead of it in the index), and
that the newer half is intact. PostgreSQL twice: the log as created now (partitioned by day)
and as created before (one table, pruned by batch only).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.log_ship import batches  # noqa: E402
from bench.postgres import ADMIN_URL, fresh_database  # noqa: E402
from kubeloop.log_partitions import Partitions  # noqa: E402
from kubeloop.log_retention import cutoff, prune  # noqa: E402
from kubeloop.log_store import ensure_schema, make_engine, predictions  # noqa: E402
from serving import shipper, spool  # noqa: E402

DATABASE = "kubeloop_bench_log_prune"
SEGMENT_ROWS = 200_000
DAY = 86_400.0


def fill(engine, rows: int, one_table: bool) -> None:
    """Half the rows 100 days old, half new, a segment at a time (``one_table``: into the
    unpartitioned table a log created before partitioning has)."""
    from sqlalchemy import MetaData

    if one_table:
        predictions.to_metadata(MetaData()).create(engine)
    ensure_schema(engine)
    partitions = Partitions(engine)
    for k in range(max(1, rows // SEGMENT_ROWS)):
        items = batches(SEGMENT_ROWS, 100)
        if k % 2 == 0:
            items = [replace(b, ts=b.ts - 100 * DAY) for b in items]
        shipper.store_segments(engine, [(f"bench/{k}", spool.to_table(items))], partitions)


def measure(name: str, url: str, rows: int, one_table: bool = False) -> None:
    engine = make_engine(url)
    started = time.perf_counter()
    fill(engine, rows, one_table)
    filled = time.perf_counter() - started
    marks = [time.perf_counter()]
    pruned = prune(engine, cutoff(90), on_batch=lambda _t, _n: marks.append(time.perf_counter()))
    seconds = marks[-1] - marks[0]
    batches = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    first, last = (sum(part) / len(part) for part in (batches[:5], batches[-5:]))
    with engine.connect() as conn:
        left = conn.scalar(select(func.count()).select_from(predictions))
    engine.dispose()
    print(
        f"| {name} | {rows:,} | {filled:.1f} | {pruned.predictions:,} | {pruned.partitions} | "
        f"{seconds:.2f} | {pruned.predictions / seconds:,.0f} | {max(batches):.2f} | "
        f"{first:.2f} | {last:.2f} | {left:,} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--postgres", default=ADMIN_URL, help="PostgreSQL admin URL")
    args = parser.parse_args()
    print(
        "| store | rows logged | fill (s) | rows pruned | partitions dropped | prune (s) | rows/s "
        "| longest step (s) | first 5 steps (s) | last 5 steps (s) | rows left |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    measure("PostgreSQL, by day", fresh_database(DATABASE, args.postgres), args.rows)
    url = fresh_database(DATABASE, args.postgres)
    measure("PostgreSQL, one table (before)", url, args.rows, one_table=True)
    with tempfile.TemporaryDirectory() as tmp:
        measure("SQLite", f"sqlite:///{tmp}/log.db", args.rows)


if __name__ == "__main__":
    main()
