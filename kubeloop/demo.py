"""``make demo``: the whole closed loop on the embedded default, from a fresh clone.

Two environments share one registry, as on a cluster (docs/serving.md, "Releases"): a staging
server serves the project's model with shadow scoring on, a production server the spec's
``rollout.production_model``, which only an approval fills (``copy_model_version``).

1. generate sample data; 2. train and register a model with the kfp.local pipeline; 3. approve
it: champion in staging, released into production as its champion; 4. serve both; 5. send
production's callers traffic that drifts (a heatwave, busier buildings, new equipment) and 6.
its ground truth; the labelled predictions stay in the prediction log; 7. production's
monitoring (``KUBELOOP_SERVED_MODEL=production``, as values-prod.yaml sets it): Evidently finds
the drift, quality has dropped, retraining is launched (kfp.local, the same pipeline: the next
automatic revision) on the history and production's labelled predictions its ingest step reads
from the log (``retraining.labelled_hours``), and a second run right after launches nothing
(cooldown); 8. release the new challenger: staging shadow and stress test, an approval
(``kubeloop rollout approve``: the OS user here, the registry's authenticated user on a
cluster) that copies it into the production model, production canary 10% -> 50% -> 100%,
promotion, and staging's champion follows production's; 9. monitor production's new champion.
A summary ends it: versions, metrics before and after, and where the reports are.

Everything lands in ``<work_dir>/demo`` (``.kubeloop/demo``), wiped at the start so every run
is a fresh one; inspect it afterwards with ``KUBELOOP_WORK_DIR=.kubeloop/demo kubeloop ...``.
The rollout's hold times are shortened to seconds here (the spec's are minutes).
``KUBELOOP_DEMO_ROWS`` sets the size of the first dataset.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from kubeloop import model_store, registry
from kubeloop.sample_data import DEFAULT_START, GeneratorConfig, generate
from kubeloop.spec import CanaryStep, ProjectSpec, load_spec, resolve_source

SPEC = Path(__file__).resolve().parents[1] / "examples" / "building_energy" / "spec.yaml"
TOKEN = "kubeloop-demo-token"
ADMIN_TOKEN = "kubeloop-demo-admin-token"  # the admin routes (rollout) take their own token
console = Console()


@dataclass(frozen=True)
class DemoConfig:
    rows: int = 20_000  # first dataset (6 weeks of readings)
    drift_rows: int = 8_000  # new readings (2 weeks after it, drifted): served, then labelled
    buildings: int = 500
    seed: int = 42
    drift: Literal["covariate", "concept", "both"] = "both"
    strength: float = 1.0
    initial_training: Literal["pipeline", "steps"] = "pipeline"  # steps: in-process (tests)
    hold_seconds: float = 3.0  # each canary step
    shadow_requests: int = 150
    canary_predictions: tuple[int, int, int] = (15, 40, 40)  # per step: 10%, 50%, 100%
    later_rows: int = 2_000  # more readings of the same weeks: callers during and after rollout
    after_rows: int = 600  # of those, scored by the new champion at the end


@dataclass
class DemoResult:
    champion_before: str
    champion_after: str
    challenger: str
    monitor_before: Any  # monitoring.job.MonitorOutcome
    second_monitor: Any
    monitor_after: Any
    rollout: Any  # monitoring.rollout.Step
    shadow_report: str | None
    metrics_file: Path
    exported_before: str  # the Prometheus textfile right after drift was detected
    lineage: dict[str, Any]
    production_model: str
    released: dict[str, Any]  # the staging version's status after the approval released it
    staging_champion: str  # staging's champion at the end: production's, followed
    seconds: dict[str, float] = field(default_factory=dict)


# -- the caller's side of the server ----------------------------------------------------------
def caller(url: str) -> httpx.Client:
    """A keep-alive client of the demo's server, with its token."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def _post(server: httpx.Client, path: str, body: Any) -> Any:
    response = server.post(path, json=body)
    response.raise_for_status()
    return response.json()


def records(raw: pd.DataFrame, spec: ProjectSpec) -> tuple[list[dict], np.ndarray]:
    """Readings as /predict records (the model's features, keyed by building) and actuals."""
    from kubeloop.engineering import feature_frame

    frame = feature_frame(raw, spec)
    names = [c for c in frame.columns if c not in (spec.entity_key, spec.timestamp, spec.target)]
    values = frame[names].to_numpy(dtype="float64")
    keys = frame[spec.entity_key].astype(str).tolist()
    out = [
        {"features": dict(zip(names, row, strict=True)), "key": key}
        for row, key in zip(values.tolist(), keys, strict=True)
    ]
    return out, frame[spec.target].to_numpy()


def send(server: httpx.Client, recs: list[dict], actuals: np.ndarray, batch: int) -> int:
    """Predict in batches, then send the ground truth of every prediction; returns the count."""
    sent = 0
    for start in range(0, len(recs), batch):
        answer = _post(server, "/predict", {"records": recs[start : start + batch]})
        items = [
            {"request_id": p["request_id"], "actual": float(actuals[start + i])}
            for i, p in enumerate(answer["predictions"])
        ]
        _post(server, "/feedback", items)
        sent += len(items)
    return sent


class Traffic:
    """Callers in the background: one record per request, feedback right after."""

    def __init__(self, url: str, recs: list[dict], actuals: np.ndarray, threads: int = 3):
        self.url, self.recs, self.actuals = url, recs, actuals
        self.stop = threading.Event()
        self.sent = 0
        self.errors = 0
        self.threads = [
            threading.Thread(target=self._run, args=(i, threads), daemon=True)
            for i in range(threads)
        ]

    def _run(self, offset: int, stride: int) -> None:
        i = offset
        with caller(self.url) as server:
            while not self.stop.is_set():
                j = i % len(self.recs)
                try:
                    send(server, [self.recs[j]], self.actuals[j : j + 1], 1)
                    self.sent += 1
                except httpx.HTTPError:
                    self.errors += 1
                    time.sleep(0.05)
                i += stride

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: timed out waiting for {what}")
        time.sleep(0.2)


def logged_rows(engine, model_name: str) -> int:
    from sqlalchemy import func, select

    from kubeloop.log_store import predictions

    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(predictions)
                    .where(predictions.c.model_name == model_name)
                ).scalar_one()
            )
    except Exception:  # noqa: BLE001 - the table appears with the first write
        return 0


# -- the loop -----------------------------------------------------------------------------------
def demo_spec(spec: ProjectSpec, config: DemoConfig) -> ProjectSpec:
    """The example spec with the rollout paced for a demo (seconds instead of minutes); the
    approval is a step of its own, as in staging (no auto-approval)."""
    minutes = config.hold_seconds / 60
    steps = tuple(
        CanaryStep(weight=w, hold_minutes=minutes, min_requests=n)
        for w, n in zip((0.1, 0.5, 1.0), config.canary_predictions, strict=True)
    )
    rollout = spec.rollout.model_copy(
        update={
            "steps": steps,
            "shadow_min_requests": config.shadow_requests,
            "shadow_hold_minutes": 0,
            "auto_approve_dev": False,
            "timeout_minutes": 3,
            # A short stress test with a loose latency limit: a laptop running the whole loop
            # is no production node (the spec's own limits judge real releases).
            "stress": spec.rollout.stress.model_copy(
                update={"duration_seconds": 3, "max_p99_ms": 1000}
            ),
        }
    )
    return spec.model_copy(update={"rollout": rollout})


def run_demo(
    work_dir: Path,
    config: DemoConfig = DemoConfig(),
    say: Callable[[str], None] = console.print,
    section: Callable[[str], None] = console.rule,
) -> DemoResult:
    """Run the loop in ``work_dir`` (emptied first); returns what happened."""
    from pydantic import SecretStr

    from monitoring import controller
    from monitoring.job import run_monitor
    from monitoring.launch import LocalLauncher
    from monitoring.rollout import AWAITING, HttpServerAdmin
    from monitoring.settings import MonitoringSettings
    from monitoring.window import open_log
    from serving.process import ServerProcess

    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    # The embedded default whatever the shell says: MLflow in the demo's own folder.
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work_dir / 'mlflow.db'}"
    settings = MonitoringSettings(work_dir=work_dir)
    settings.export_to_environment()
    # Production's monitoring job: the model production serves (the chart sets it so there).
    watch = settings.model_copy(update={"served_model": "production"})
    spec = demo_spec(load_spec(SPEC), config)
    production = str(spec.rollout.production_model)
    clock: dict[str, float] = {}
    started = time.perf_counter()

    def lap(name: str) -> None:
        clock[name] = time.perf_counter() - started - sum(clock.values())

    section("[bold]1/9 sample data")
    source = Path(resolve_source(spec.data.source, settings))
    source.parent.mkdir(parents=True, exist_ok=True)
    first = generate(
        GeneratorConfig(rows=config.rows, seed=config.seed, buildings=config.buildings)
    )
    first.to_parquet(source, index=False)
    say(f"{len(first):,} meter readings (6 weeks, {config.buildings} buildings) -> {source}")
    lap("data")

    # The servers start while the first model trains (their imports take a while); each waits
    # for a champion. The MLflow store exists first, so only one process ever creates it.
    client = model_store.configure(settings)
    client.search_experiments()
    spec_file = work_dir / "spec.yaml"
    shutil.copyfile(SPEC, spec_file)
    env = {
        **settings.export(),
        "KUBELOOP_SPEC": str(spec_file),
        "KUBELOOP_API_TOKEN": TOKEN,
        "KUBELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
        "KUBELOOP_SHADOW_ENABLED": "true",
        "KUBELOOP_REGISTRY_POLL_SECONDS": "1",
        "KUBELOOP_LOG_FLUSH_SECONDS": "0.1",
    }
    server = ServerProcess(env, log_path=work_dir / "staging.log", wait_ready=False).start()
    # Production: the same image and store, serving the model only approvals fill; no shadow.
    production_env = {
        **env,
        "KUBELOOP_SERVED_MODEL": "production",
        "KUBELOOP_SHADOW_ENABLED": "false",
    }
    production_server = ServerProcess(
        production_env, log_path=work_dir / "production.log", wait_ready=False
    ).start()
    engine = open_log(settings.log_url)
    try:
        section("[bold]2/9 training pipeline")
        if config.initial_training == "pipeline":
            from pipelines.runner import run_local

            version = run_local(spec, settings, progress=say).version
        else:
            from pipelines.steps import run_steps

            version = run_steps(spec, settings).version
        if not version:
            raise SystemExit("the evaluation gate rejected the first model; see the log above")
        lap("train")

        section("[bold]3/9 approval")
        champion = registry.promote(
            client, spec.model_name, version, approve=True, approver="make-demo"
        )
        before = champion.tags[registry.TAG_NAME]
        first = registry.release(client, spec.model_name, version, production, state_tags={})
        registry.promote(client, production, str(first.version), approve=True)
        say(
            f"{spec.model_name} {before} approved: champion in staging, released as "
            f"{production} version {first.version}, champion in production"
        )
        lap("approve")

        section("[bold]4/9 model servers")
        server.await_ready()
        production_server.await_ready()
        say(f"staging: {spec.model_name} {before} on {server.url} (shadow scoring on)")
        say(f"production: {production} {before} on {production_server.url}")
        lap("serve")

        section("[bold]5/9 traffic that drifts")
        # Two weeks after the first dataset, drifted: part of it is the incident's traffic
        # (served, labelled, landed for retraining), the rest keeps callers busy later.
        readings = generate(
            GeneratorConfig(
                rows=config.drift_rows + config.later_rows,
                seed=config.seed + 1,
                buildings=config.buildings,
                start=DEFAULT_START + timedelta(weeks=6),
                weeks=2,
                drift=config.drift,
                strength=config.strength,
            )
        ).sample(frac=1.0, random_state=0)
        new = readings.iloc[: config.drift_rows].sort_values(spec.timestamp)
        recs, actuals = records(new, spec)
        say(f"{len(recs):,} readings of a {config.drift} shift (hotter, busier, new equipment)")

        section("[bold]6/9 feedback (ground truth)")
        with caller(production_server.url) as http:
            sent = send(http, recs, actuals, batch=100)
        wait_for(lambda: logged_rows(engine, production) >= sent, "the prediction log")
        say(
            f"{sent:,} predictions answered by production and labelled, in the prediction log: "
            "retraining reads production's labelled ones from there (retraining.labelled_hours "
            "in the spec)"
        )
        lap("traffic")

        section("[bold]7/9 monitoring -> retraining")
        launcher = LocalLauncher(settings)
        monitor_before = run_monitor(spec, watch, launcher=launcher, engine=engine)
        drift, quality = monitor_before.analysis.drift, monitor_before.analysis.quality
        say(
            f"drift: {drift.share:.0%} of features ({', '.join(drift.drifted)}); rmse "
            f"{quality.current.get('rmse', float('nan')):.1f} live vs "
            f"{quality.baseline.get('rmse', float('nan')):.1f} baseline"
        )
        say(f"decision: {monitor_before.verdict.reason or 'no retraining'}")
        if monitor_before.launched is None or not monitor_before.launched.version:
            raise SystemExit(
                "demo: retraining did not register a new version "
                f"({monitor_before.launch_error or monitor_before.launched})"
            )
        challenger = monitor_before.launched.version
        exported_before = Path(monitor_before.metrics_target).read_text()
        say(
            f"retraining (kfp.local, the history and the labelled predictions) registered "
            f"[bold]{challenger}[/bold] as challenger"
        )
        second = run_monitor(spec, watch, launcher=launcher, engine=engine)
        say(
            f"a second monitoring run right after: "
            f"{second.claim.why if second.claim else 'nothing to do'}"
        )
        lap("monitor")

        section("[bold]8/9 release: staging shadow -> approval -> production canary")

        def controller_for(url: str, phase: str):
            # the rollout drives the admin routes: it holds the admin token and, for the
            # stress test's load on the candidate (staging), the predict token
            tokens = {"api_token": SecretStr(ADMIN_TOKEN), "predict_token": SecretStr(TOKEN)}
            changes = {"server_url": url, "rollout_phase": phase, **tokens}
            return controller.build(settings.model_copy(update=changes), spec)

        def serves(url: str, role: str, label: str) -> bool:
            status = HttpServerAdmin(url, ADMIN_TOKEN).status()
            return (status.get(role) or {}).get("label") == label

        def progress(where: str) -> Callable[[Any], None]:
            return lambda s: say(f"  {where} [{s.state}] {s.message}")

        wait_for(
            lambda: serves(server.url, "candidate", challenger), f"staging to load {challenger}"
        )
        staging, prod = (
            controller_for(server.url, "staging"),
            controller_for(production_server.url, "production"),
        )
        live, live_actuals = records(readings.iloc[config.drift_rows :], spec)
        with Traffic(server.url, live, live_actuals):
            waiting = staging.run(progress=progress("staging"), max_seconds=240)
        if waiting.state != AWAITING:
            raise SystemExit(f"demo: staging ended {waiting.state}: {waiting.message}")
        released = staging.approve(challenger)  # `kubeloop rollout approve V1.0.1`
        say(
            f"  approval by {released['approved_by']}: {challenger} released as "
            f"{released['released_as']}"
        )
        # production loads the copy once the first canary weight asks for it
        with Traffic(production_server.url, live, live_actuals):
            result = prod.run(progress=progress("production"), max_seconds=240)
        staging.step(challenger)  # staging's next run: its champion follows production's
        status = staging.status(challenger)
        followed = registry.by_alias(client, spec.model_name, registry.CHAMPION)
        staging_champion = followed.tags[registry.TAG_NAME]
        say(f"  staging's champion follows production's: {staging_champion}")
        lap("rollout")

        section("[bold]9/9 the new champion")
        after = registry.by_alias(client, production, registry.CHAMPION)
        after_label = after.tags[registry.TAG_NAME]
        wait_for(
            lambda: serves(production_server.url, "champion", after_label),
            f"production to serve {after_label}",
        )
        before_rows = logged_rows(engine, production)
        with caller(production_server.url) as http:
            sent = send(
                http, live[: config.after_rows], live_actuals[: config.after_rows], batch=100
            )
        wait_for(
            lambda: logged_rows(engine, production) >= before_rows + sent, "the prediction log"
        )
        monitor_after = run_monitor(spec, watch, launch=False, engine=engine)
        lap("after")
    finally:
        production_server.stop()
        server.stop()
    from monitoring.lineage import show

    return DemoResult(
        champion_before=before,
        champion_after=after_label,
        challenger=challenger,
        monitor_before=monitor_before,
        second_monitor=second,
        monitor_after=monitor_after,
        rollout=result,
        shadow_report=status.get("shadow_report"),
        metrics_file=Path(monitor_after.metrics_target),
        exported_before=exported_before,
        lineage=show(client, production, after_label),
        production_model=production,
        released=released,
        staging_champion=staging_champion,
        seconds=clock,
    )


def summary(result: DemoResult) -> Table:
    """Versions and figures, before and after the loop closed."""
    table = Table("", "before", "after", title="kubeloop demo: the closed loop")
    b, a = result.monitor_before, result.monitor_after
    table.add_row(
        f"champion of {result.production_model}", result.champion_before, result.champion_after
    )
    table.add_row(
        "drifted features", f"{b.analysis.drift.share:.0%}", f"{a.analysis.drift.share:.0%}"
    )
    for metric in ("rmse", "mae", "r2"):
        table.add_row(
            f"live {metric}",
            f"{b.analysis.quality.current.get(metric, np.nan):.3f}",
            f"{a.analysis.quality.current.get(metric, np.nan):.3f}",
        )
        table.add_row(  # each champion's own test window: not comparable across columns
            f"baseline {metric} (own test rows)",
            f"{b.analysis.quality.baseline.get(metric, np.nan):.3f}",
            f"{a.analysis.quality.baseline.get(metric, np.nan):.3f}",
        )
    table.add_row("predictions monitored", f"{b.rows:,}", f"{a.rows:,}")
    return table


def epilogue(result: DemoResult) -> list[str]:
    """What happened in between, and where to look."""
    b, a = result.monitor_before, result.monitor_after
    data, feats = result.lineage["data"], result.lineage["features"]
    return [
        f"retraining launched because: {b.verdict.reason}",
        f"a second trigger right after: {result.second_monitor.claim.why}",
        f"staging: {result.challenger} approved by {result.released['approved_by']}, released "
        f"as {result.released['released_as']}",
        f"production canary of {result.challenger}: {result.rollout.state} "
        f"({result.rollout.message}); staging's champion now {result.staging_champion}",
        f"lineage of {result.champion_after}: DVC {data.get('dvc_md5')}, Feast "
        f"{feats.get('feature_service')} materialized {feats.get('materialized_from')} .. "
        f"{feats.get('materialized_to')}, MLflow run {result.lineage['mlflow']['run_id']}",
        f"monitoring report before: {b.report}",
        f"shadow report: {result.shadow_report}",
        f"monitoring report after: {a.report}",
        f"Prometheus metrics: {result.metrics_file}",
        "wall time: "
        + f"{sum(result.seconds.values()):.0f} s ("
        + ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
        + ")",
    ]


def command_path(path: Path) -> str:
    """``path`` as a user would type it here: relative to the working directory when inside it
    (``.venv/bin/kubeloop``), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main() -> None:
    from monitoring.observability import dashboard_hint
    from monitoring.settings import MonitoringSettings

    config = DemoConfig(rows=int(os.environ.get("KUBELOOP_DEMO_ROWS", DemoConfig.rows)))
    work_dir = MonitoringSettings().work_dir / "demo"
    result = run_demo(work_dir, config)
    console.print(summary(result))
    for line in epilogue(result):
        console.print(line, highlight=False, soft_wrap=True)
    cli = command_path(Path(sys.executable).with_name("kubeloop"))
    console.print(
        f"state: {work_dir}; to look around it:\n"
        f"  export KUBELOOP_WORK_DIR={work_dir}\n"
        f"  {cli} versions\n"
        f"  {cli} lineage {result.champion_after}\n"
        f"  {cli} rollout status",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        dashboard_hint(MonitoringSettings(work_dir=work_dir)), highlight=False, soft_wrap=True
    )


if __name__ == "__main__":
    main()
