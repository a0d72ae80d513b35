"""Benchmark: wall time and peak memory of one monitoring run over N logged predictions.

    .venv/bin/python bench/monitoring.py                 # 100k and 1M rows (default)
    .venv/bin/python bench/monitoring.py --rows 100000 300000 1000000

Setup (not measured): a champion with 10 numeric features, its 5,000-row reference sample and
held-out metrics in a throw-away MLflow store; a SQLite prediction log holding N predictions
(features as JSON, as the server writes them) with feedback for half of them, 10% drifted.
Measured: ``monitoring.job.run_monitor`` end to end (read the window, join feedback, Evidently
drift and quality, HTML report, Prometheus textfile, MLflow logging), each size in a fresh
process so the peak RSS is that run's own. Results: a Markdown table on stdout and
``bench/results/monitoring.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FEATURES = [f"f{i}" for i in range(10)]
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MODEL = "bench-monitoring"


def spec():
    from kubeloop.spec import load_spec

    base = load_spec(REPO / "examples" / "building_energy" / "spec.yaml")
    return base.model_copy(
        update={
            "name": MODEL,
            "monitoring": base.monitoring.model_copy(update={"window_hours": 24 * 30}),
        }
    )


def make_champion(work: Path) -> None:
    """A linear model on 10 features, logged and registered the way kubeloop's steps do."""
    import mlflow
    import pandas as pd
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import Pipeline

    from kubeloop import model_store, registry
    from kubeloop.metrics import regression_metrics
    from monitoring.settings import MonitoringSettings

    settings = MonitoringSettings(work_dir=work)
    client = model_store.configure(settings)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 10))
    y = X @ np.arange(1, 11) + rng.normal(0, 1, len(X))
    model = Pipeline([("model", LinearRegression())]).fit(X[:16_000], y[:16_000])
    reference = pd.DataFrame(X[:5_000], columns=FEATURES)
    reference["energy_kwh"] = y[:5_000]
    reference["prediction"] = model.predict(X[:5_000])
    experiment = model_store.experiment_id(settings, MODEL)
    with mlflow.start_run(experiment_id=experiment) as run, tempfile.TemporaryDirectory() as tmp:
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            serialization_format="skops",
            skops_trusted_types=model_store.trusted_types(model),
            metadata={"features": FEATURES},
            pip_requirements=["scikit-learn"],
        )
        reference.to_parquet(Path(tmp) / "reference.parquet")
        mlflow.log_artifact(str(Path(tmp) / "reference.parquet"), artifact_path="reference")
        mlflow.log_metrics(
            {
                f"test_{k}": v
                for k, v in regression_metrics(y[16_000:], model.predict(X[16_000:])).items()
            }
        )
    version = registry.register(client, MODEL, info.model_uri, run.info.run_id, 1, 0, "bench")
    registry.promote(client, MODEL, str(version.version), approve=True, approver="bench")


def fill_log(path: Path, rows: int) -> None:
    """N predictions over the last day before NOW (JSON features), feedback for every other."""
    import orjson

    from kubeloop.log_store import create_all
    from monitoring.window import open_log

    create_all(open_log(f"sqlite:///{path}"))
    rng = np.random.default_rng(1)
    con = sqlite3.connect(path)
    start = NOW - timedelta(days=1)
    step = 86_400 / rows
    for lo in range(0, rows, 200_000):
        n = min(200_000, rows - lo)
        X = rng.normal(size=(n, 10))
        X[: n // 10] += 1.5  # a drifted tenth
        pred = X @ np.arange(1, 11)
        actual = pred + rng.normal(0, 1.2, n)
        ts = [
            (start + timedelta(seconds=(lo + i) * step)).strftime("%Y-%m-%d %H:%M:%S.%f")
            for i in range(n)
        ]
        con.executemany(
            "INSERT INTO predictions (request_id, ts, entity_id, features, prediction, "
            "model_name, model_version, model_label, role) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                (
                    f"r{lo + i}",
                    ts[i],
                    str(i % 500),
                    orjson.dumps(dict(zip(FEATURES, X[i].round(6).tolist(), strict=True))).decode(),
                    float(pred[i]),
                    MODEL,
                    "1",
                    "V1.0.0",
                    "champion",
                )
                for i in range(n)
            ),
        )
        con.executemany(
            "INSERT INTO feedback (request_id, ts, actual) VALUES (?,?,?)",
            ((f"r{lo + i}", ts[i], float(actual[i])) for i in range(0, n, 2)),
        )
        con.commit()
    con.close()


def child(work: Path, log_path: Path, sample_rows: int) -> dict:
    """One measured monitoring run (in its own process)."""
    os.environ["KUBELOOP_WORK_DIR"] = str(work)
    from monitoring.job import run_monitor
    from monitoring.settings import MonitoringSettings

    settings = MonitoringSettings(
        work_dir=work,
        prediction_log_url=f"sqlite:///{log_path}",
        drift_sample_rows=sample_rows or None,
    )
    started = time.perf_counter()
    outcome = run_monitor(spec(), settings, now=NOW, launch=False)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "rows": outcome.rows,
        "labelled": outcome.labelled_rows,
        "compared": outcome.analysis.compared_rows,
        "wall_seconds": wall,
        "peak_rss_bytes": peak,
        "drift_share": outcome.analysis.drift.share,
        "rmse_live": outcome.analysis.quality.current.get("rmse"),
        "timings": outcome.timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--sample-rows",
        type=int,
        default=100_000,
        help="KUBELOOP_DRIFT_SAMPLE_ROWS for the run (0: Evidently sees every row)",
    )
    parser.add_argument("--child", nargs=2, metavar=("WORK", "LOG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), Path(args.child[1]), args.sample_rows)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-") as tmp:
        work = Path(tmp) / "work"
        os.environ["KUBELOOP_WORK_DIR"] = str(work)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        make_champion(work)
        for rows in args.rows:
            log_path = Path(tmp) / f"log-{rows}.db"
            t = time.perf_counter()
            fill_log(log_path, rows)
            print(f"filled {rows:,} rows in {time.perf_counter() - t:.0f}s", file=sys.stderr)
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(work),
                    str(log_path),
                    "--sample-rows",
                    str(args.sample_rows),
                ],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(result)
            stages = ", ".join(f"{k} {v:.1f}s" for k, v in result["timings"].items())
            print(
                f"{rows:,} rows: {result['wall_seconds']:.1f}s, "
                f"{result['peak_rss_bytes'] / 2**30:.2f} GiB ({stages})",
                file=sys.stderr,
            )
    out = REPO / "bench" / "results" / "monitoring.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(
        "| logged predictions | labelled | rows Evidently compared | wall time (s) | "
        "read window (s) | Evidently (s) | peak RSS (GiB) |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        t = r["timings"]
        print(
            f"| {r['rows']:,} | {r['labelled']:,} | {r['compared']:,} | "
            f"{r['wall_seconds']:.1f} | {t['read_window']:.1f} | {t['evidently']:.1f} | "
            f"{r['peak_rss_bytes'] / 2**30:.2f} |"
        )


if __name__ == "__main__":
    main()
