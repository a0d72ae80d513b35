"""Benchmark: the prediction log through a database outage and a SIGKILL, under load.

    .venv/bin/python bench/log_outage.py                     # 2-minute outage (default)
    .venv/bin/python bench/log_outage.py --outage 30 --rows 10

What it does, all on 127.0.0.1 (PostgreSQL at ``--postgres``, trust auth):

1. Fits and registers the serving benchmark's model (``bench/serving/run.py``'s preparation, in
   its own work folder and Redis db) and creates a fresh PostgreSQL database for the log, which
   the server reaches through a TCP proxy this script controls.
2. Starts ``python -m serving`` (one process, validation, metrics, the log on) and runs wrk
   (8 connections, ``--rows``-row requests, bounded: it stops by itself) for
   ``warm + outage + recovery + after`` seconds. ``warm`` seconds in, the proxy is cut (every
   connection closed, new ones refused: the database is gone for the server) for ``--outage``
   seconds, then restored; ``recovery`` seconds later the server's whole process group is
   SIGKILLed while wrk keeps sending (those requests fail).
3. Restarts the server on the same spool directory, waits until the spool is empty, and
   reports the rows answered (wrk's 2xx responses x rows), the rows in the store (and distinct
   request ids), the rows the restarted server counted as lost (accepted but never spooled by
   the killed one), and the spool's peak size. Writes ``bench/results/log-outage.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.postgres import ADMIN_URL, fresh_database  # noqa: E402
from bench.serving import payloads  # noqa: E402
from bench.serving import run as serving_bench  # noqa: E402
from serving.process import ServerProcess  # noqa: E402
from serving.spool import spool_bytes  # noqa: E402
from tests.utils.tcp_proxy import TcpProxy  # noqa: E402

RESULTS = REPO / "bench" / "results"
WORK = RESULTS / "log-outage-work"
TOKEN = "outage-token"
DATABASE = "kubeloop_bench_log_outage"


def log(message: str) -> None:
    serving_bench.log(message)


def store_counts(url: str) -> tuple[int, int]:
    """Rows and distinct request ids in the store."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                text("SELECT count(*), count(DISTINCT request_id) FROM predictions")
            ).one()
            return int(rows), int(distinct)
    finally:
        engine.dispose()


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    import httpx

    text = httpx.get(server.url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def server(prepared: dict[str, str], url: str, spool: Path, log_path: Path) -> ServerProcess:
    env = {
        "KUBELOOP_WORK_DIR": str(WORK),
        "KUBELOOP_SPEC": prepared["spec"],
        "MLFLOW_TRACKING_URI": prepared["tracking_uri"],
        "KUBELOOP_API_TOKEN": TOKEN,
        "KUBELOOP_ENV": "prod",
        "KUBELOOP_PREDICTION_LOG_URL": url,
        "KUBELOOP_LOG_SPOOL_DIR": str(spool),
        "KUBELOOP_LOG_SPOOL_MAX_BYTES": str(8 * 2**30),
        "KUBELOOP_MAX_BATCH_RECORDS": "1000",
    }
    return ServerProcess(env, log_path=log_path, ready_timeout=240).start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--outage", type=float, default=120.0, help="seconds without database")
    parser.add_argument("--warm", type=float, default=20.0, help="seconds of load before it")
    parser.add_argument("--recovery", type=float, default=20.0, help="seconds before SIGKILL")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of load after it")
    parser.add_argument("--rows", type=int, default=10, help="rows per request")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--postgres", default=ADMIN_URL, help="PostgreSQL admin URL")
    args = parser.parse_args()

    binary = serving_bench.ensure_wrk()
    serving_bench.WORK, serving_bench.REDIS_DB = WORK, 13  # not the serving benchmark's
    log("preparing the model and the registry")
    prepared = serving_bench.prepare_models()
    direct = fresh_database(DATABASE, args.postgres)
    body = RESULTS / "log-outage-payload.json"
    body.write_bytes(payloads.kubeloop(payloads.rows(args.rows)))
    spool = WORK / "spool"
    host_port = re.search(r"@([^/]+)/", direct)
    host, port = (host_port.group(1) if host_port else "127.0.0.1:5432").split(":")
    total = args.warm + args.outage + args.recovery + args.after
    peak = 0
    with TcpProxy(host, int(port)) as proxy:
        via_proxy = direct.replace(f"@{host}:{port}/", f"@127.0.0.1:{proxy.port}/")
        first = server(prepared, via_proxy, spool, RESULTS / "log-outage-server-1.log")
        url = first.url + payloads.PATHS["kubeloop"]
        command = [
            binary,
            "-t2",
            f"-c{args.connections}",
            f"-d{round(total)}s",
            "--timeout",
            "5s",
            "-s",
            str(REPO / "bench" / "serving" / "post.lua"),
            url,
            "--",
            str(body),
            TOKEN,
        ]
        log(f"wrk for {total:.0f}s: {args.rows}-row requests, {args.connections} connections")
        load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        started = time.monotonic()

        def at(seconds: float) -> None:
            nonlocal peak
            while time.monotonic() - started < seconds:
                peak = max(peak, spool_bytes(spool))
                time.sleep(1)

        at(args.warm)
        proxy.cut()
        log(f"database cut off for {args.outage:.0f}s")
        at(args.warm + args.outage)
        peak = max(peak, spool_bytes(spool))
        proxy.restore()
        log(f"database back; spool holds {peak / 2**20:.0f} MiB at its peak")
        at(args.warm + args.outage + args.recovery)
        assert first.process is not None
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        first.stop()
        left = spool_bytes(spool)
        log(f"server SIGKILLed; {left / 2**20:.0f} MiB left on its spool")
        output = load.communicate()[0]
        rps, _, p99, errors, answered_requests = serving_bench.parse_wrk(output)
        answered = answered_requests * args.rows
        log(f"wrk: {answered_requests:,} requests answered ({rps:,.0f}/s), {errors} errors")

        second = server(prepared, via_proxy, spool, RESULTS / "log-outage-server-2.log")
        restarted = time.monotonic()
        try:
            while spool_bytes(spool) > 0 and time.monotonic() - restarted < 1800:
                time.sleep(1)
            drained = time.monotonic() - restarted
            threading.Event().wait(2)  # the metrics follow the shipper twice a second
            lost = metric(
                second, "kubeloop_prediction_log_dropped_rows_total", reason="writer_lost"
            )
        finally:
            second.stop()
    stored, distinct = store_counts(direct)
    result = {
        "outage_seconds": args.outage,
        "rows_per_request": args.rows,
        "connections": args.connections,
        "requests_per_second": rps,
        "p99_ms": p99,
        "rows_answered": answered,
        "rows_in_store": stored,
        "distinct_request_ids": distinct,
        "rows_counted_lost_at_sigkill": int(lost),
        "spool_peak_bytes": peak,
        "spool_left_at_sigkill_bytes": left,
        "restart_to_spool_empty_seconds": drained,
        "missing": answered - distinct,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "log-outage.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(
        "| outage (s) | rows answered | rows in the store (distinct ids) | counted lost at "
        "SIGKILL | spool peak (MiB) | restart to empty spool (s) |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: |\n"
        f"| {args.outage:.0f} | {answered:,} | {stored:,} ({distinct:,}) | {int(lost):,} | "
        f"{peak / 2**20:.0f} | {drained:.0f} |"
    )


if __name__ == "__main__":
    main()
