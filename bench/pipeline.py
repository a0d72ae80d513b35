"""Wall time of each training-pipeline step and of the whole run, on 100k and 1M rows.

Runs the real pipeline (`kubeloop run training`, kfp.local: every step a fresh process, as on a
laptop) in a fresh work folder per size and reads each step's start and end from the
orchestrator's log. Usage: `python bench/pipeline.py [--rows 100000 1000000] [--repeat 1]
[--offline-store postgresql]`. ``--offline-store postgresql`` puts Feast's offline store in a
fresh database of the machine's PostgreSQL (``KUBELOOP_TEST_POSTGRES``), as on a cluster, instead
of the embedded DuckDB over Parquet. Target: 100k rows in under 90 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.postgres import fresh_database  # noqa: E402

SPEC = REPO / "examples" / "building_energy" / "spec.yaml"
STEPS = ("ingest", "features", "train", "evaluate", "register")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d{3}) - INFO - (Executing task|Task) '(\w+)'( finished)?")


def step_times(log: str) -> dict[str, float]:
    """Seconds per step from kfp.local's 'Executing task' / 'finished' log lines."""
    started: dict[str, datetime] = {}
    took: dict[str, float] = {}
    for raw in log.splitlines():
        match = LINE.match(ANSI.sub("", raw))
        if not match:
            continue
        stamp = datetime.strptime(match.group(1), "%H:%M:%S.%f")
        name = match.group(3)
        if match.group(2) == "Executing task":
            started[name] = stamp
        elif match.group(4) and name in started:
            took[name] = (stamp - started[name]).total_seconds()
    return took


def run_once(rows: int, offline_store: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-") as tmp:
        env = {**os.environ, "KUBELOOP_WORK_DIR": f"{tmp}/work"}
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("KUBELOOP_FEAST_OFFLINE_STORE", None)
        if offline_store == "postgresql":
            env["KUBELOOP_FEAST_OFFLINE_STORE"] = fresh_database("kubeloop_bench_offline")
        kubeloop = [sys.executable, "-m", "kubeloop"]
        subprocess.run(
            [
                *kubeloop,
                "data",
                "generate",
                "--rows",
                str(rows),
                "--out",
                f"{tmp}/work/raw/building_energy.parquet",
            ],
            check=True,
            env=env,
            cwd=REPO,
            capture_output=True,
        )
        start = time.perf_counter()
        proc = subprocess.run(
            [*kubeloop, "run", "training", "--verbose", "--spec", str(SPEC)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        total = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"pipeline failed on {rows} rows:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        return {**step_times(proc.stdout + proc.stderr), "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=1, help="runs per size (median reported)")
    parser.add_argument(
        "--offline-store",
        choices=("embedded", "postgresql"),
        default="embedded",
        help="Feast's offline store: DuckDB over Parquet, or a fresh PostgreSQL database",
    )
    args = parser.parse_args()
    print(f"{'rows':>10} " + " ".join(f"{s:>9}" for s in (*STEPS, "total")) + "   (seconds)")
    for rows in args.rows:
        runs = [run_once(rows, args.offline_store) for _ in range(args.repeat)]
        medians = {
            k: statistics.median(r.get(k, float("nan")) for r in runs) for k in (*STEPS, "total")
        }
        print(
            f"{rows:>10,} " + " ".join(f"{medians[k]:>9.1f}" for k in (*STEPS, "total")), flush=True
        )


if __name__ == "__main__":
    main()
