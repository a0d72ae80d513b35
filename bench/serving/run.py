"""Serving benchmark: kubeloop against `mlflow models serve` and KServe, in one run, with wrk.

Usage (from the repository root; takes ~6 minutes)::

    make bench-serving            # or: .venv/bin/python bench/serving/run.py [--duration 15]

What it does, all on 127.0.0.1 and with nothing downloaded but packages:

1. Installs wrk with apt-get if it is missing, and KServe into its own venv
   (``bench/results/venv-kserve``, pins in ``requirements-kserve.txt``; not the project lock).
2. Fits one GradientBoostingRegressor (n_estimators=100, max_depth=3) on scikit-learn's diabetes
   data, registers it in an MLflow registry under ``bench/results/serving-work`` as the
   ``champion`` of ``diabetes``, saves the same object with joblib for KServe, and materializes
   the rows into Feast's Redis online store (db 14) as entities.
3. Starts the three servers side by side (one process each; kubeloop with its token,
   validation, metrics and prediction log on), checks that every payload answers exactly the
   model's predictions, then, scenario by scenario, runs wrk (2 threads) on each server in
   turn, ``--rounds`` times (3; every other round in reverse order), for 1-row and 100-row
   requests at 8 and 64 connections, 100 rows through the Open Inference Protocol (V2, the
   same body to kubeloop and KServe), and, for kubeloop, 100 rows as a table (``columns`` +
   ``rows``, the same information as MLflow's ``dataframe_split``) and 1-row requests by entity
   id. A kubeloop scenario's best peer is the fastest peer run of the same row count, whatever
   its protocol. Each run follows a short warm-up; after a kubeloop run the next waits until
   kubeloop's prediction log has stored every row it answered (PostgreSQL by default,
   ``--log-store``), so shipping does not run during a peer's turn, and counts the rows in the
   store. A shared machine's speed drifts over minutes (by a third between two runs of the
   same server, minutes apart, on 2026-12-02): interleaved rounds make the drift weigh on
   every server alike, and the median round is what a scenario reports.
4. Prints RPS (the median round's and each round's), p50, p99 and the largest RSS of the
   server's process tree, and writes the results as JSON and as a Markdown table under
   ``bench/results/``.

``--before CHECKOUT`` adds a "kubeloop (before)" server: the same ``python -m serving`` run
from another checkout of the repository (e.g. ``git worktree add ../before <commit>``), measured
in every kubeloop scenario right beside the current code, for before/after comparisons in one
run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from bench.postgres import ADMIN_URL, fresh_database  # noqa: E402
from bench.serving import payloads  # noqa: E402
from serving.process import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results"
WORK = RESULTS / "serving-work"
KSERVE_VENV = RESULTS / "venv-kserve"
TOKEN = "bench-token"
BEFORE = "kubeloop (before)"
REDIS_DB = 14
PROMETHEUS_MULTIPROCESS = ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR")


@dataclass
class Result:
    server: str
    scenario: str  # "1 row", "100 rows", "entity id"
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_mb: float
    lookup_p99_ms: float | None = None
    # kubeloop only: rows answered (warm-up included), rows found in the log store after the
    # run (counted there, not from the server's counters), the difference, and how long the
    # log took after the run to hold them all.
    rows_answered: int | None = None
    rows_logged: int | None = None
    rows_dropped: int | None = None
    log_drain_seconds: float | None = None
    # Requests/s of each round (``--rounds``); rps, p50 and p99 are the median round's.
    rps_runs: list[float] | None = None


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("installing wrk (apt-get)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "wrk"], check=False)
    if not shutil.which("wrk"):
        subprocess.run([*sudo, "apt-get", "update", "-q"], check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-q", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def ensure_kserve() -> Path:
    python = KSERVE_VENV / "bin" / "python"
    marker = KSERVE_VENV / ".installed"
    requirements = HERE / "requirements-kserve.txt"
    if marker.exists() and marker.read_text() == requirements.read_text():
        return python
    log(f"creating {KSERVE_VENV} with KServe (pip, pinned in {requirements.name})")
    uv = shutil.which("uv")
    if uv:
        subprocess.run([uv, "venv", "-q", "-p", "3.11", str(KSERVE_VENV)], check=True)
        subprocess.run(
            [uv, "pip", "install", "-q", "-p", str(python), "-r", str(requirements)], check=True
        )
    else:
        subprocess.run([sys.executable, "-m", "venv", str(KSERVE_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True
        )
    marker.write_text(requirements.read_text())
    return python


def prepare_models() -> dict[str, str]:
    """Fit the model once; register it (kubeloop, MLflow), dump it (KServe), put its rows in
    Feast's Redis online store. Returns paths and URIs."""
    import joblib
    import mlflow
    import pandas as pd
    from sklearn.datasets import load_diabetes

    from components.features.core import materialize_features
    from kubeloop import model_store, registry
    from kubeloop.settings import PlatformSettings
    from kubeloop.spec import load_spec

    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    os.environ["KUBELOOP_WORK_DIR"] = str(WORK)
    settings = PlatformSettings(
        **{
            "work_dir": WORK,
            "feast_online_store": "redis",
            "redis_url": f"127.0.0.1:6379,db={REDIS_DB}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{WORK / 'mlflow.db'}",
        }
    )
    spec = load_spec(HERE / "spec.yaml")
    X, y = load_diabetes(return_X_y=True)
    model = spec.model.estimator.build().fit(X, y)

    client = model_store.configure(settings)
    experiment = model_store.experiment_id(settings, spec.name)
    example = pd.DataFrame(X[:5], columns=payloads.FEATURES)
    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            input_example=example,
            signature=mlflow.models.infer_signature(example, model.predict(X[:5])),
            serialization_format="skops",
            skops_trusted_types=model_store.trusted_types(model),
            metadata={"features": payloads.FEATURES, "target": spec.target, "task": spec.task},
        )
    version = registry.register(
        client, spec.model_name, info.model_uri, run.info.run_id, 1, 0, "bench"
    )
    registry.promote(client, spec.model_name, str(version.version), approve=True, approver="bench")

    kserve_dir = WORK / "kserve-model"
    kserve_dir.mkdir()
    joblib.dump(model, kserve_dir / "model.joblib")

    raw = pd.DataFrame(X, columns=payloads.FEATURES)
    raw.insert(0, "patient_id", range(len(raw)))
    raw.insert(1, "event_timestamp", pd.Timestamp.now(tz="UTC").floor("s"))
    raw["progression"] = y
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    materialize_features(raw, spec, settings)
    return {
        "tracking_uri": settings.tracking_uri,
        "model_uri": f"models:/{spec.model_name}/1",
        "kserve_dir": str(kserve_dir),
        "spec": str(HERE / "spec.yaml"),
        "entities": str(len(raw)),
    }


class Server:
    def __init__(
        self,
        name: str,
        command: list[str],
        env: dict[str, str],
        port: int,
        ready_path: str,
        headers: dict[str, str] | None = None,
        cwd: Path = REPO,
        log_url: str | None = None,
    ):
        self.name, self.command, self.port, self.cwd = name, command, port, cwd
        self.log_url = log_url  # the prediction log store (kubeloop)
        # Importing Feast (``prepare_models``) set PROMETHEUS_MULTIPROC_DIR in this process;
        # inherited, it would put every server's metrics in multiprocess (mmap) mode, which a
        # one-process pod does not use.
        inherited = {k: v for k, v in os.environ.items() if k not in PROMETHEUS_MULTIPROCESS}
        self.env = {**inherited, **env, "PYTHONUNBUFFERED": "1"}
        self.ready_path, self.headers = ready_path, headers or {}
        self.log_path = RESULTS / f"serving-{name.replace(' ', '-').strip('()')}.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        log(f"starting {self.name}: {' '.join(self.command)}")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url(self.ready_path), timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} not ready; see {self.log_path}")

    def __exit__(self, *exc: object) -> None:
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.url(path),
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", **self.headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def rss_mb(self) -> float:
        """Resident memory of the server and all its child processes."""
        assert self.process is not None
        total, stack = 0, [self.process.pid]
        while stack:
            pid = stack.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
                for task in Path(f"/proc/{pid}/task").iterdir():
                    children = (task / "children").read_text().split()
                    stack.extend(int(c) for c in children)
            except (OSError, AttributeError):
                continue
        return total / 1024


def parse_wrk(output: str) -> tuple[float, float, float, int, int]:
    """RPS, p50 and p99 (ms), errors, and the requests answered with a 2xx."""

    def millis(label: str) -> float:
        match = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    non_2xx = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    done = re.search(r"(\d+) requests in", output)
    answered = (int(done.group(1)) if done else 0) - non_2xx
    errors = non_2xx
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket:
        errors += sum(int(n) for n in socket.groups())
    return rps, millis("50%"), millis("99%"), errors, answered


def wrk(
    binary: str, url: str, connections: int, seconds: float, script: str, args: list[str]
) -> tuple[float, float, float, int, int]:
    command = [
        binary,
        "-t2",
        f"-c{connections}",
        f"-d{round(seconds)}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(HERE / script),
        url,
        "--",
        *args,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(output)


def histogram_p99(text: str, name: str) -> dict[float, float]:
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets[float(le)] = buckets.get(float(le), 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def quantile_from(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound of the bucket holding the q-quantile of the observations between two
    scrapes (Prometheus' histogram_quantile, without interpolation), in ms."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return float("nan")
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= q * total:
            return bound * 1000
    return float("inf")


def check_payloads(server: Server, name: str, model, X_by_rows) -> None:
    for n, X in X_by_rows.items():
        status, body = server.post(payloads.PATHS[name], payloads.BUILDERS[name](X))
        if status != 200:
            raise RuntimeError(f"{name} refused the {n}-row payload: {status} {body[:300]!r}")
        got = payloads.predictions(name, body)
        expected = model.predict(X).tolist()
        if (
            len(got) != len(expected)
            or max(abs(a - b) for a, b in zip(got, expected, strict=True)) > 1e-6
        ):
            raise RuntimeError(f"{name} answered {got[:3]}..., expected {expected[:3]}...")


def run(args: argparse.Namespace) -> list[Result]:
    import joblib

    RESULTS.mkdir(parents=True, exist_ok=True)
    args.load_before = os.getloadavg()[0]
    binary = ensure_wrk()
    kserve_python = ensure_kserve()
    log("preparing the model, the registry and the online store")
    prepared = prepare_models()
    model = joblib.load(Path(prepared["kserve_dir"]) / "model.joblib")
    X_by_rows = {1: payloads.rows(1), 100: payloads.rows(100)}
    bodies = {}
    for name, build in payloads.BUILDERS.items():
        for n, X in X_by_rows.items():
            path = RESULTS / f"payload-{name}-{n}.json"
            path.write_bytes(build(X))
            bodies[name, n] = path

    mlflow_port = free_port()
    servers = {
        "kubeloop": kubeloop_server("kubeloop", prepared, REPO, log_store(args, "predictions")),
        "mlflow": Server(
            "mlflow",
            [
                str(Path(sys.executable).parent / "mlflow"),
                "models",
                "serve",
                "-m",
                prepared["model_uri"],
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(mlflow_port),
                "-w",
                "1",
            ],
            {
                "MLFLOW_TRACKING_URI": prepared["tracking_uri"],
                # mlflow runs `uvicorn` from PATH
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            },
            mlflow_port,
            "/ping",
        ),
        "kserve": kserve_server(kserve_python, prepared),
    }
    kubeloops = ["kubeloop"]
    if args.before is not None:
        servers[BEFORE] = kubeloop_server(
            BEFORE, prepared, args.before.resolve(), log_store(args, "predictions-before")
        )
        kubeloops.append(BEFORE)
    # All servers run side by side (an idle one costs memory, not CPU) and every scenario is
    # measured on each of them in turn, so that the load of a shared machine, which drifts over
    # minutes, weighs on all of them alike.
    peers = {"mlflow": "mlflow", "kserve": "kserve"}
    records = {name: "kubeloop" for name in kubeloops}
    scenarios = [
        ("1 row", 1, {**records, **peers}),
        ("100 rows", 100, {**records, **peers}),
        ("100 rows (table)", 100, {name: "kubeloop-table" for name in kubeloops}),
        (
            "100 rows (V2)",
            100,
            {**{name: "kubeloop-v2" for name in kubeloops}, "kserve": "kserve-v2"},
        ),
    ]
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        for name, server in servers.items():
            stack.enter_context(server)
            forms = {form for _, _, by in scenarios for s, form in by.items() if s == name}
            for form in sorted(forms):
                check_payloads(server, form, model, X_by_rows)
            log(f"{name}: payloads answer the model's predictions")
        runs: dict[tuple[str, str, int], list[Result]] = {}
        for scenario, n, by_server in scenarios:
            for connections in (8, 64):
                order = list(by_server.items())
                if connections == 64:
                    order.reverse()
                for name, form in interleaved(order, args.rounds):
                    server = servers[name]
                    token = TOKEN if name in kubeloops else ""
                    script_args = [str(bodies[form, n]), token]
                    rows_before = stored_rows(server)
                    url = server.url(payloads.PATHS[form])
                    warm = wrk(binary, url, connections, args.warmup, "post.lua", script_args)
                    rps, p50, p99, errors, answered = wrk(
                        binary, url, connections, args.duration, "post.lua", script_args
                    )
                    result = Result(
                        name, scenario, connections, rps, p50, p99, errors, server.rss_mb()
                    )
                    runs.setdefault((name, scenario, connections), []).append(result)
                    log(
                        f"{name} {scenario} c={connections}: {rps:,.0f} req/s, "
                        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, errors {errors}, "
                        f"RSS {result.rss_mb:.0f} MB"
                    )
                    if name in kubeloops:
                        account(result, server, rows_before, (warm[4] + answered) * n, args)
        entity_servers = [servers[name] for name in kubeloops]
        for server in entity_servers:
            check_entity_payload(server)
        for connections in (8, 64):
            for server in interleaved(entity_servers, args.rounds):
                result = entity_run(binary, server, args, int(prepared["entities"]), connections)
                runs.setdefault((server.name, result.scenario, connections), []).append(result)
        for name in kubeloops:
            log_status(servers[name])
        results = [combined(measured) for measured in runs.values()]
    results.sort(key=lambda r: ("kubeloop", BEFORE, "mlflow", "kserve").index(r.server))
    write(results, args)
    return results


def log_store(args: argparse.Namespace, name: str) -> str:
    """A fresh, empty prediction log store for one server: a PostgreSQL database ``<name>``
    (dropped and created on ``--postgres``) or ``<name>.db`` (SQLite) in the work folder."""
    if args.log_store == "sqlite":
        return f"sqlite:///{WORK / name}.db"
    return fresh_database("kubeloop_bench_" + re.sub(r"\W", "_", name), args.postgres)


def stored_rows(server: Server) -> int:
    """Rows in the server's prediction log store (0 before its tables exist)."""
    if server.log_url is None:
        return 0
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(server.log_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM predictions")).scalar_one())
    except SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


def account(
    result: Result, server: Server, rows_before: int, answered: int, args: argparse.Namespace
) -> None:
    """Wait until the server's log has stored what it answered (at most ``--drain-timeout``),
    then count the rows in the store."""
    started = time.monotonic()
    wait_for_log(server, args.drain_timeout)
    result.log_drain_seconds = time.monotonic() - started
    result.rows_answered = answered
    result.rows_logged = stored_rows(server) - rows_before
    # wrk does not count the responses in flight when it stops; the server answered and
    # logged them, so the store may hold a few requests' rows more than wrk counted.
    result.rows_dropped = max(0, answered - result.rows_logged)
    log(
        f"{server.name} log: {answered:,} rows answered, {result.rows_logged:,} in the store "
        f"{result.log_drain_seconds:.0f}s after the run, {result.rows_dropped:,} dropped"
    )


def kubeloop_server(name: str, prepared: dict[str, str], checkout: Path, log_url: str) -> Server:
    """``python -m serving`` from ``checkout`` on the prepared registry and online store, with
    its own prediction log store and spool."""
    port = free_port()
    spool = WORK / ("spool-" + re.sub(r"\W", "_", name))
    env = {
        "KUBELOOP_WORK_DIR": str(WORK),
        "KUBELOOP_PREDICTION_LOG_URL": log_url,
        "KUBELOOP_LOG_SPOOL_DIR": str(spool),
        "KUBELOOP_SPEC": prepared["spec"],
        "MLFLOW_TRACKING_URI": prepared["tracking_uri"],
        "KUBELOOP_API_TOKEN": TOKEN,
        "KUBELOOP_ENV": "prod",
        "KUBELOOP_HOST": "127.0.0.1",
        "KUBELOOP_PORT": str(port),
        "KUBELOOP_FEAST_ONLINE_STORE": "redis",
        "KUBELOOP_REDIS_URL": f"127.0.0.1:6379,db={REDIS_DB}",
        "KUBELOOP_MAX_BATCH_RECORDS": "1000",
    }
    headers = {"Authorization": f"Bearer {TOKEN}"}
    command = [sys.executable, "-m", "serving"]
    return Server(name, command, env, port, "/health/ready", headers, cwd=checkout, log_url=log_url)


def kserve_server(python: Path, prepared: dict[str, str]) -> Server:
    """KServe's Python model server (its own venv) on the prepared joblib model."""
    port = free_port()
    command = [
        str(python),
        str(HERE / "kserve_server.py"),
        "--model_name",
        payloads.MODEL,
        "--model_dir",
        prepared["kserve_dir"],
        "--http_port",
        str(port),
        "--grpc_port",
        str(free_port()),
        "--workers",
        "1",
    ]
    return Server("kserve", command, {}, port, f"/v1/models/{payloads.MODEL}")


def interleaved(order: list[Any], rounds: int) -> list[Any]:
    """``rounds`` passes over ``order``, every other one reversed: a machine whose speed drifts
    over minutes (a shared host's does, by a third between runs of the same server here) then
    weighs on every server alike, instead of on whichever ran during a slow spell."""
    out: list[Any] = []
    for turn in range(rounds):
        out += order if turn % 2 == 0 else order[::-1]
    return out


def combined(runs: list[Result]) -> Result:
    """A scenario's runs as one result: the median run's throughput and latency, every run's
    requests/s beside it, the largest RSS, and the rows of all runs."""
    median = sorted(runs, key=lambda r: r.rps)[(len(runs) - 1) // 2]
    out = replace(
        median,
        errors=sum(r.errors for r in runs),
        rss_mb=max(r.rss_mb for r in runs),
        rps_runs=[r.rps for r in runs],
    )
    if median.rows_answered is not None:
        out.rows_answered = sum(r.rows_answered or 0 for r in runs)
        out.rows_logged = sum(r.rows_logged or 0 for r in runs)
        out.rows_dropped = sum(r.rows_dropped or 0 for r in runs)
        out.log_drain_seconds = max(r.log_drain_seconds or 0.0 for r in runs)
    return out


def check_entity_payload(server: Server) -> None:
    status, body = server.post("/predict", payloads.kubeloop_entity(7))
    if status != 200:
        raise RuntimeError(f"{server.name} refused an entity payload: {status} {body[:300]!r}")


def entity_run(
    binary: str, server: Server, args: argparse.Namespace, entities: int, connections: int
) -> Result:
    url = server.url("/predict")
    rows_before = stored_rows(server)
    warm = wrk(binary, url, connections, args.warmup, "entity.lua", [str(entities), TOKEN])
    before = scrape(server)
    rps, p50, p99, errors, answered = wrk(
        binary, url, connections, args.duration, "entity.lua", [str(entities), TOKEN]
    )
    after = scrape(server)
    lookup = quantile_from(before, after, 0.99)
    result = Result(
        server.name,
        "entity id (Redis)",
        connections,
        rps,
        p50,
        p99,
        errors,
        server.rss_mb(),
        lookup,
    )
    log(
        f"{server.name} by entity c={connections}: {rps:,.0f} req/s, p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms, lookup p99 <= {lookup:.2f} ms, errors {errors}"
    )
    account(result, server, rows_before, warm[4] + answered, args)
    return result


def scrape(server: Server) -> dict[float, float]:
    with urllib.request.urlopen(server.url("/metrics"), timeout=10) as response:
        text = response.read().decode()
    return histogram_p99(text, "kubeloop_feature_lookup_duration_seconds")


def log_counts(server: Server) -> dict[str, int]:
    """The prediction log's counts, from readiness (open: no admin token needed)."""
    with urllib.request.urlopen(server.url("/health/ready"), timeout=10) as response:
        return json.loads(response.read())["prediction_log"]


def wait_for_log(server: Server, timeout: float) -> None:
    end = time.monotonic() + timeout
    while log_counts(server)["queued"] > 0 and time.monotonic() < end:
        time.sleep(0.5)


def log_status(server: Server) -> None:
    log(f"kubeloop prediction log: {log_counts(server)}")


def table(results: list[Result]) -> str:
    lines = [
        "| server | request | connections | RPS (median) | RPS of each round | p50 (ms) | p99 (ms) "
        "| errors | RSS (MB) | rows answered | rows logged (in the store) | rows dropped "
        "| log drained after (s) |",
        "| --- | --- |" + " ---: |" * 11,
    ]

    def count(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    for r in results:
        lookup = f" (lookup p99 ≤ {r.lookup_p99_ms:.2f} ms)" if r.lookup_p99_ms is not None else ""
        drain = "-" if r.log_drain_seconds is None else f"{r.log_drain_seconds:.0f}"
        each = ", ".join(f"{rps:,.0f}" for rps in r.rps_runs or [r.rps])
        lines.append(
            f"| {r.server} | {r.scenario}{lookup} | {r.connections} | {r.rps:,.0f} | {each} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {r.rss_mb:.0f} | "
            f"{count(r.rows_answered)} | {count(r.rows_logged)} | {count(r.rows_dropped)} | "
            f"{drain} |"
        )
    return "\n".join(lines)


# The peers' runs a kubeloop scenario is compared with: its best peer is the fastest of them,
# whatever the protocol (for 100 rows KServe answers both its V1 and the V2 protocol).
PEER_SCENARIOS = {
    "1 row": ("1 row",),
    "100 rows": ("100 rows", "100 rows (V2)"),
    "100 rows (table)": ("100 rows", "100 rows (V2)"),
    "100 rows (V2)": ("100 rows", "100 rows (V2)"),
}


def ratios(results: list[Result]) -> str:
    """kubeloop against the best peer, per scenario."""
    lines = []
    for scenario, peer_scenarios in PEER_SCENARIOS.items():
        for connections in (8, 64):
            mine = [
                r
                for r in results
                if r.server == "kubeloop"
                and r.scenario == scenario
                and r.connections == connections
            ]
            peers = [
                r
                for r in results
                if r.server in ("mlflow", "kserve")
                and r.scenario in peer_scenarios
                and r.connections == connections
            ]
            if mine and peers:
                best = max(peers, key=lambda r: r.rps)
                lines.append(
                    f"- {scenario}, {connections} connections: "
                    f"{mine[0].rps / best.rps:.2f}x the best peer ({best.server}, "
                    f"{best.scenario}, {best.rps:,.0f} req/s); p99 {mine[0].p99_ms:.2f} ms vs "
                    f"{best.p99_ms:.2f} ms"
                )
    return "\n".join(lines)


def write(results: list[Result], args: argparse.Namespace) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    header = (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, wrk -t2, "
        f"{args.rounds} rounds of {args.duration:g} s per server and scenario (the median "
        f"round reported), load average {args.load_before:.1f} at the start "
        f"and {os.getloadavg()[0]:.1f} at the end"
    )
    markdown = f"{header}\n\n{table(results)}\n\n{ratios(results)}\n"
    (RESULTS / f"serving-{stamp}.md").write_text(markdown)
    (RESULTS / f"serving-{stamp}.json").write_text(
        json.dumps([asdict(r) for r in results], indent=2)
    )
    print("\n" + markdown)
    log(f"results in {RESULTS}/serving-{stamp}.md and .json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs per server and scenario, interleaved with the other servers' (median reported)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout of the repository whose server runs beside as 'kubeloop (before)'",
    )
    parser.add_argument(
        "--log-store",
        choices=("postgresql", "sqlite"),
        default="postgresql",
        help="where kubeloop's prediction log stores rows (a fresh database per server)",
    )
    parser.add_argument(
        "--postgres",
        default=ADMIN_URL,
        help="PostgreSQL admin URL the log databases are created on",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=900.0,
        help="after each kubeloop run, how long to wait for its log to store every row",
    )
    run(parser.parse_args())


if __name__ == "__main__":
    main()
