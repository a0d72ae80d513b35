"""Benchmark: wall time and peak memory of one monitoring run over N logged predictions.

    .venv/bin/python bench/monitoring.py                 # 100k and 1M rows (default)
    .venv/bin/python bench/monitoring.py --rows 100000 300000 1000000
    .venv/bin/python bench/monitoring.py --task classification   # a classifier's log

Setup (not measured): a champion with 10 numeric features, its 5,000-row reference sample and
held-out metrics in a throw-away MLflow store; a SQLite prediction log holding N predictions
(features as JSON, as the server writes them) with feedback for half of them, 10% drifted.
With ``--task classification`` the champion is a 3-class logistic regression and each logged
row holds what the server logs for a classifier (the predicted class, every class's probability
as JSON, the winner's probability as ``prediction``); feedback is the true class.
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
CLASSES = ["high", "low", "mid"]
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
MODEL = "bench-monitoring"


def spec(task: str):
    from kubeloop.spec import load_spec

    base = load_spec(REPO / "examples" / "building_energy" / "spec.yaml")
    update = {
        "name": MODEL,
        "monitoring": base.monitoring.model_copy(update={"window_hours": 24 * 30}),
    }
    if task == "classification":
        update |= {
            "task": task,
            "evaluation": base.evaluation.model_copy(update={"primary_metric": "f1"}),
        }
    return base.model_copy(update=update)


def classes_of(y: np.ndarray) -> np.ndarray:
    """The classifier's target: the regression target cut into three classes."""
    return np.array(["low", "mid", "high"])[np.digitize(y, [-8.0, 8.0])]


def make_champion(work: Path, task: str) -> None:
    """A linear model on 10 features (a logistic regression over three classes for a
    classifier), logged and registered the way kubeloop's steps do."""
    import mlflow
    import pandas as pd
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline

    from kubeloop import model_store, registry
    from kubeloop.metrics import score
    from monitoring.settings import MonitoringSettings

    settings = MonitoringSettings(work_dir=work)
    client = model_store.configure(settings)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 10))
    y = X @ np.arange(1, 11) + rng.normal(0, 1, len(X))
    estimator = LinearRegression()
    if task == "classification":
        y, estimator = classes_of(y), LogisticRegression()
    model = Pipeline([("model", estimator)]).fit(X[:16_000], y[:16_000])
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
            {f"test_{k}": v for k, v in score(task, model, X[16_000:], y[16_000:]).items()}
        )
    version = registry.register(client, MODEL, info.model_uri, run.info.run_id, 1, 0, "bench")
    registry.promote(client, MODEL, str(version.version), approve=True, approver="bench")


def fill_log(path: Path, rows: int, task: str) -> None:
    """N predictions over the last day before NOW (JSON features), feedback for every other.
    A classifier's rows: the class of the highest of three probabilities (a softmax of the
    regression's prediction against three centres), feedback the true class."""
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
        label = proba = [None] * n
        truth = actual.tolist()
        if task == "classification":
            logits = -(((pred[:, None] - [16.0, -16.0, 0.0]) / 8.0) ** 2)
            p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
            label = np.asarray(CLASSES)[p.argmax(axis=1)].tolist()
            proba = [
                orjson.dumps(dict(zip(CLASSES, r, strict=True))).decode()
                for r in p.round(6).tolist()
            ]
            truth = classes_of(actual).tolist()
            pred = p.max(axis=1)
        ts = [
            (start + timedelta(seconds=(lo + i) * step)).strftime("%Y-%m-%d %H:%M:%S.%f")
            for i in range(n)
        ]
        con.executemany(
            "INSERT INTO predictions (request_id, ts, entity_id, features, prediction, "
            "model_name, model_version, model_label, role, label, probabilities) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?)",
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
                    label[i],
                    proba[i],
                )
                for i in range(n)
            ),
        )
        column = "actual_label" if task == "classification" else "actual"
        con.executemany(
            f"INSERT INTO feedback (request_id, ts, {column}) VALUES (?,?,?)",
            ((f"r{lo + i}", ts[i], truth[i]) for i in range(0, n, 2)),
        )
        con.commit()
    con.close()


def child(work: Path, log_path: Path, sample_rows: int, task: str) -> dict:
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
    outcome = run_monitor(spec(task), settings, now=NOW, launch=False)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "rows": outcome.rows,
        "labelled": outcome.labelled_rows,
        "compared": outcome.analysis.compared_rows,
        "wall_seconds": wall,
        "peak_rss_bytes": peak,
        "drift_share": outcome.analysis.drift.share,
        "live_quality": outcome.analysis.quality.current,
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
    parser.add_argument("--task", choices=["regression", "classification"], default="regression")
    parser.add_argument("--child", nargs=2, metavar=("WORK", "LOG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        work, log_path = Path(args.child[0]), Path(args.child[1])
        print(json.dumps(child(work, log_path, args.sample_rows, args.task)))
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="kubeloop-bench-") as tmp:
        work = Path(tmp) / "work"
        os.environ["KUBELOOP_WORK_DIR"] = str(work)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        make_champion(work, args.task)
        for rows in args.rows:
            log_path = Path(tmp) / f"log-{rows}.db"
            t = time.perf_counter()
            fill_log(log_path, rows, args.task)
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
                    "--task",
                    args.task,
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
    suffix = "" if args.task == "regression" else f"-{args.task}"
    out = REPO / "bench" / "results" / f"monitoring{suffix}.json"
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
