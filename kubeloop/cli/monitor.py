"""``kubeloop monitor``, ``trigger``, ``rollout ...``, ``lineage``, ``metrics serve``: thin typer
commands (``run training`` starts through ``start_training`` here too: every trigger claims the
same launch slot).

Registered in ``kubeloop/cli/main.py`` with one line (``register(app)``); ``python -m monitoring``
runs ``monitor`` alone (the CronJob's entry point). The work is in ``monitoring.job``,
``monitoring.rollout`` and ``monitoring.lineage``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from kubeloop.cli.support import DEFAULT_SPEC, SpecOption, console, context, friendly, out
from monitoring.settings import MonitoringSettings

if TYPE_CHECKING:
    from monitoring.triggers import Trigger

WaitOption = Annotated[
    float | None,
    typer.Option(
        help="With --host: wait up to this many seconds for the run, then report it "
        "(exit 1 unless it registered a version)"
    ),
]


rollout_app = typer.Typer(
    help="Release the challenger: shadow, approval, canary steps, promotion or rollback.",
    no_args_is_help=True,
)
metrics_app = typer.Typer(help="The monitoring job's Prometheus figures.", no_args_is_help=True)


@friendly
def monitor(
    spec: SpecOption = DEFAULT_SPEC,
    window_hours: Annotated[
        float | None, typer.Option(min=0.001, help="Override monitoring.window_hours")
    ] = None,
    launch: Annotated[
        bool, typer.Option("--launch/--no-launch", help="Launch retraining when triggered")
    ] = True,
    serve_metrics: Annotated[
        int | None,
        typer.Option(help="Then serve the metrics textfiles on this port until interrupted"),
    ] = None,
) -> None:
    """Drift and quality of the champion's recent predictions; retrain when needed.

    The champion is that of the model this environment serves (KUBELOOP_SERVED_MODEL, the
    server's setting: production's model in production). Compares the window with the
    champion's training reference (Evidently), exports the
    figures as Prometheus metrics, writes the HTML report, and launches retraining when a
    threshold of the spec is crossed (once per cooldown).

    Exit codes: 0 the run is done, whether or not retraining is needed (the verdict is on
    stdout and in the report); 1 a retraining was needed and its launch failed; 2 bad input
    (the spec, no champion, no reference sample).
    """
    import logging

    from monitoring.decide import NOT_JUDGED
    from monitoring.job import run_monitor

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    project, settings = context(spec, MonitoringSettings)
    if window_hours is not None:
        project = project.model_copy(
            update={
                "monitoring": project.monitoring.model_copy(update={"window_hours": window_hours})
            }
        )
    outcome = run_monitor(project, settings, launch=launch)
    drift, quality = outcome.analysis.drift, outcome.analysis.quality
    out.print(
        f"[bold]{outcome.model_name} {outcome.label}[/bold]: {outcome.rows} "
        f"predictions ({outcome.labelled_rows} labelled) from {outcome.start:%F %T} "
        f"to {outcome.end:%F %T} UTC"
    )
    verdict = outcome.verdict
    unjudged = f"[dim]{NOT_JUDGED}[/dim]"
    out.print(
        f"drift: {drift.share:.0%} of features ({', '.join(drift.drifted) or 'none'})"
        + ("" if verdict.drift_judged else unjudged)
    )
    if drift.prediction is not None:
        out.print(
            f"prediction drift: {drift.prediction.method} {drift.prediction.score:.3g}"
            f"{' (drifted)' if drift.prediction.drifted else ''}"
        )
    if quality.current:
        metric = quality.primary
        others = ", ".join(f"{k} {v:.4g}" for k, v in quality.current.items() if k != metric)
        out.print(
            f"quality: {metric} {quality.current.get(metric, float('nan')):.4g} live, "
            f"{quality.baseline.get(metric, float('nan')):.4g} baseline"
            + (f" (live {others})" if others else "")
            + ("" if verdict.quality_judged else unjudged)
        )
    for note in outcome.verdict.notes:
        out.print(f"[dim]{note}[/dim]")
    if outcome.verdict.retrain:
        out.print(f"[yellow]retraining needed:[/yellow] {outcome.verdict.reason}")
        if outcome.claim is not None and not outcome.claim.granted:
            out.print(f"not launched: {outcome.claim.why}")
        if outcome.launched is not None:
            out.print(f"launched {outcome.launched.run_id}: {outcome.launched.detail}")
    else:
        out.print("[green]no retraining needed[/green]")
    out.print(f"report: {outcome.report}\nmetrics: {outcome.metrics_target}")
    if outcome.launch_error:
        console.print(f"[red]launch failed:[/red] {outcome.launch_error}")
        raise typer.Exit(1)
    if serve_metrics:
        # this machine only, as `kubeloop metrics serve` by default: the figures are not public
        serve_until_interrupted(settings.metrics_path, serve_metrics, "127.0.0.1")


def serve_until_interrupted(folder: Path, port: int, addr: str) -> None:
    """Serve the monitoring textfiles of ``folder`` on ``addr:port/metrics`` until Ctrl-C."""
    from monitoring import exporter

    try:
        exporter.serve(folder, port, addr=addr)
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot listen on {addr}:{port}: {exc.strerror}")
        raise typer.Exit(2) from None
    console.print(f"serving {folder}/*.prom on http://{addr}:{port}/metrics (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


@metrics_app.command("serve")
def metrics_serve(
    folder: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="Folder of the monitoring job's *.prom textfiles"
        ),
    ],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 9108,
    addr: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
) -> None:
    """Serve a monitoring run's figures to Prometheus (the demo's metrics, a copied folder)."""
    serve_until_interrupted(folder, port, addr)


def _rollout(spec: Path, server_url: str | None):
    from monitoring import controller

    project, settings = context(spec, MonitoringSettings, server_url=server_url)
    return controller.build(settings, project), project


ServerOption = Annotated[
    str | None, typer.Option(help="Model server URL (default: KUBELOOP_SERVER_URL)")
]
VersionArg = Annotated[
    str | None, typer.Argument(help="Registry number or V-name (default: the challenger)")
]


@rollout_app.command("run")
@friendly
def rollout_run(
    version: VersionArg = None,
    spec: SpecOption = DEFAULT_SPEC,
    server_url: ServerOption = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop driving after this long")] = None,
) -> None:
    """Drive the rollout until the candidate is promoted, rolled back, or waits for approval.

    Without a challenger there is nothing to do (exit 0), so a scheduled run stays quiet.
    """
    from kubeloop import registry

    rollout, _ = _rollout(spec, server_url)
    if version is None:
        # rollout.name: the production model in the production phase, the project's elsewhere
        challenger = registry.by_alias(rollout.client, rollout.name, registry.CHALLENGER)
        champion = rollout.champion()
        if challenger is None or (
            champion is not None and str(champion.version) == str(challenger.version)
        ):
            console.print(
                f"{rollout.name} has no challenger besides the champion: nothing to roll out"
            )
            return
    result = rollout.run(
        version,
        max_seconds=None if max_minutes is None else 60 * max_minutes,
        progress=lambda s: console.print(escape(f"[{s.state}] {s.message}")),
    )
    if result.state == "rolled_back":
        raise typer.Exit(1)


@rollout_app.command("status")
@friendly
def rollout_status(
    version: VersionArg = None,
    spec: SpecOption = DEFAULT_SPEC,
    as_json: Annotated[bool, typer.Option("--json", help="Every recorded tag as JSON")] = False,
) -> None:
    """Show the candidate's rollout state and, per step, the counts, latency and quality it
    judged and where they came from."""
    from monitoring.rollout import step_rows

    rollout, project = _rollout(spec, None)
    status = rollout.status(version)
    if as_json:
        typer.echo(json.dumps(status, indent=2))
        return
    out.print(
        f"{status['model']} {status['label']} (version {status['version']}): {status['state']}"
    )
    # A block per step, not a table: its cells are sentences, which a table at a terminal's
    # 80 columns cut off mid-word.
    for row in step_rows(status, project.evaluation.primary_metric, project.task):
        details = {k: v for k, v in row.items() if k not in ("step", "verdict") and v != "-"}
        out.print(f"[bold]{row['step']}[/bold]: {row['verdict']}", highlight=False)
        for key, value in details.items():
            out.print(f"  {key}: {value}", highlight=False, soft_wrap=True)
    if status.get("rollback_reason"):
        out.print(f"rolled back: {status['rollback_reason']}")
    if status.get("shadow_report_uri") or status.get("shadow_report"):
        out.print(
            f"shadow report: {status.get('shadow_report_uri') or status['shadow_report']} "
            f"(`kubeloop rollout report {status['label'] or status['version']}` fetches it)",
            highlight=False,
            soft_wrap=True,
        )


@rollout_app.command("report")
@friendly
def rollout_report(
    version: VersionArg = None,
    spec: SpecOption = DEFAULT_SPEC,
    folder: Annotated[
        Path, typer.Option("--out", help="Where to put a report fetched from MLflow")
    ] = Path("rollout-reports"),
) -> None:
    """The candidate's shadow report (HTML, its verdict first): fetched from the candidate's
    MLflow run, where the rollout controller logged it; prints the file's path."""
    from monitoring.rollout import shadow_report_file

    rollout, _ = _rollout(spec, None)
    out.print(str(shadow_report_file(rollout.status(version), folder)), highlight=False)


@rollout_app.command("approve")
@friendly
def rollout_approve(version: VersionArg = None, spec: SpecOption = DEFAULT_SPEC) -> None:
    """Approve the candidate after reviewing its shadow report and stress test: recorded with
    the identity the registry authenticated (MLflow basic-auth; else your OS user). In staging
    this releases it to production, which only approvers may do."""
    rollout, _ = _rollout(spec, None)
    status = rollout.approve(version)
    if status.get("released_as"):
        console.print(
            f"[green]approved {status['label']} ({status['approved_by']}): released as "
            f"{status['released_as']}[/green]; production's `kubeloop rollout run` continues "
            "with the canary"
        )
        return
    console.print(
        f"[green]approved {status['label']} ({status['approved_by']})[/green]; "
        "`kubeloop rollout run` continues with the canary"
    )


@rollout_app.command("rollback")
@friendly
def rollout_rollback(
    version: VersionArg = None,
    spec: SpecOption = DEFAULT_SPEC,
    server_url: ServerOption = None,
    reason: Annotated[str, typer.Option(help="Why (recorded)")] = "rolled back by hand",
) -> None:
    """Stop the canary at once: weight 0, challenger alias removed, champion untouched."""
    rollout, _ = _rollout(spec, server_url)
    result = rollout.rollback(rollout.candidate(version), reason)
    console.print(result.message)


@friendly
def lineage_cmd(
    version: Annotated[str, typer.Argument(help="Registry number, V-name or alias")],
    spec: SpecOption = DEFAULT_SPEC,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Where a model version came from and when it took traffic.

    DVC data version, Feast materialization, MLflow run, registry version and approval, and
    the shadow, canary and champion times.
    """
    from kubeloop import model_store
    from monitoring.lineage import show

    project, settings = context(spec, MonitoringSettings)
    record = show(model_store.configure(settings), settings.model_name(project), version)
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{record['model']} {record['label']} (version {record['version']})"
        + ("" if record["deployed"] else " - never deployed"),
        show_header=False,
    )
    data, feats, run, reg = record["data"], record["features"], record["mlflow"], record["registry"]
    rows = [
        ("DVC data version", data.get("dvc_md5")),
        ("DVC file", f"{data.get('dvc_path')} ({data.get('dvc_size')} bytes)"),
        ("production rows", production_rows(data)),
        ("Feast feature service", feats.get("feature_service")),
        (
            "Feast materialized",
            f"{feats.get('materialized_from')} .. {feats.get('materialized_to')}",
        ),
        (
            "MLflow run",
            f"{run.get('run_id')} (experiment {run.get('experiment_id')}, "
            f"started {run.get('started_at')})",
        ),
        ("trained by", run.get("user")),
        ("code commit", run.get("git_commit")),
        (
            "held-out metrics",
            ", ".join(f"{k} {v:.4g}" for k, v in sorted(run.get("test_metrics", {}).items())),
        ),
        ("evaluation gate", gate_verdict(record.get("evaluation") or {}, run)),
        ("registered", reg.get("registered_at")),
        ("retrained because", reg.get("retrained_because")),
        (
            "approved",
            reg.get("approved_by") and f"{reg['approved_by']} at {reg.get('approved_at')}",
        ),
        (
            "replaced",
            f"version {reg['promoted_from']} as champion"
            if reg.get("promoted_from") not in (None, "none")
            else None,
        ),
        ("aliases", ", ".join(record.get("aliases", [])) or "-"),
        *[(f"traffic: {k.replace('_', ' ')}", v) for k, v in record["traffic"].items() if v],
        ("rollout", record.get("rollout_state")),
    ]
    for key, value in rows:
        table.add_row(key, str(value) if value not in (None, "") else "-")
    Console().print(table)


def gate_verdict(evaluation: dict, run: dict) -> str | None:
    """The evaluation gate's verdict and its comparison with the champion of the time on the
    same held-out rows (each version's own held-out metrics come from different windows)."""
    if not evaluation.get("gate"):
        return None  # registered by hand, or before the gate was recorded
    ours, theirs = run.get("test_metrics", {}), evaluation.get("champion_metrics", {})
    against = [f"{k} {ours[k]:.4g} against {v:.4g}" for k, v in sorted(theirs.items()) if k in ours]
    verdict = evaluation["gate"]
    if evaluation.get("reasons"):
        verdict += f" ({evaluation['reasons']})"
    if against:
        return f"{verdict}; on the same rows as the champion then: {', '.join(against)}"
    return f"{verdict}; no champion to compare with then"


def production_rows(data: dict) -> str | None:
    """How many labelled production rows joined the dataset, and from which window."""
    rows = data.get("production_rows")
    if rows is None:
        return None  # a run from before this was recorded
    hours = float(data.get("labelled_hours") or 0)
    if not hours:
        return "none (retraining.labelled_hours unset)"
    return f"{rows} labelled predictions of the last {hours:g} h"


TRIGGERS = {"schedule": "schedule", "merge": "merge", "new-data": "new_data"}


@friendly
def trigger_cmd(
    kind: Annotated[str, typer.Argument(help="schedule, merge or new-data")],
    spec: SpecOption = DEFAULT_SPEC,
    source: Annotated[str | None, typer.Option(help="Override data.source")] = None,
    host: Annotated[
        str | None, typer.Option(envvar="KFP_HOST", help="KFP API server URL: submit there")
    ] = None,
    token: Annotated[
        str | None, typer.Option(envvar="KFP_TOKEN", help="Bearer token for the KFP API")
    ] = None,
    reason: Annotated[str, typer.Option(help="Recorded with the run")] = "",
    wait: WaitOption = None,
) -> None:
    """Start training for a trigger (the chart's CronJobs, the merge workflow); new-data starts
    only when the source holds monitoring.new_source_rows more rows than the last trained data
    version. A run in progress for the model is superseded."""
    if kind not in TRIGGERS:
        raise typer.BadParameter(f"kind: choose {', '.join(TRIGGERS)}", param_hint="KIND")
    if kind == "new-data":
        from kubeloop import model_store
        from pipelines.new_data import new_rows_reason, source_rows, trained_rows

        project, settings = context(spec)
        client = model_store.configure(settings)
        rows, trained = (
            source_rows(project, settings, source),
            trained_rows(client, project, settings),
        )
        threshold = project.monitoring.new_source_rows
        why = new_rows_reason(rows, trained, threshold)
        if why is None:
            if threshold is None:
                said = "monitoring.new_source_rows is unset, so new rows never start a run"
            else:
                said = (
                    f"{rows:,} rows at the source, {trained:,} in the last trained data "
                    f"version: {max(rows - (trained or 0), 0):,} new, fewer than "
                    f"monitoring.new_source_rows ({threshold:,})"
                )
            out.print(f"no run started: {said}", highlight=False)
            return
        reason = why
    start_training(spec, TRIGGERS[kind], reason or kind, source, host, token, None, False, wait)  # type: ignore[arg-type]


def start_training(
    spec_path: Path,
    trigger: Trigger,
    reason: str,
    source: str | None,
    host: str | None,
    token: str | None,
    run_name: str | None,
    verbose: bool,
    wait: float | None,
) -> None:
    """Claim the model's launch slot, supersede the run in progress, run or submit, report."""
    from monitoring.launch import KfpLauncher, Launcher, LocalLauncher
    from monitoring.triggers import trigger_run

    project, settings = context(spec_path, MonitoringSettings, kfp_host=host, kfp_token=token)
    launcher: Launcher
    kfp: KfpLauncher | None = None
    if host:
        launcher = kfp = KfpLauncher(settings, run_name=run_name)
    else:
        console.print(
            f"running [bold]{project.name}[/bold] training locally (kfp.local); "
            f"state in {settings.work_dir}"
        )
        launcher = LocalLauncher(
            settings,
            progress=None if verbose else lambda line: console.print(f"  {line}", highlight=False),
        )
    done = trigger_run(project, settings, launcher, trigger=trigger, reason=reason, source=source)
    if done.claim.superseded is not None:
        console.print(f"superseded run {done.claim.superseded.run_id or '(starting)'}")
    launched = done.launched
    if launched is None:  # only a racing trigger is refused: others have no cooldown
        console.print(f"[yellow]not started: {done.claim.why}[/yellow]")
        raise typer.Exit(1)
    if not launched.finished:
        console.print(f"submitted run {launched.run_id} to {host}")
        if kfp is None or wait is None:
            return
        launched = kfp.wait(launched.run_id, project.model_name, wait)
        console.print(f"run {launched.run_id}: {launched.detail}", highlight=False)
        if launched.version:
            return
        raise typer.Exit(1)  # rejected, failed, terminated or still running
    if launched.error is not None:
        raise launched.error  # a step's failure, reported by @friendly like any other
    if launched.version:
        console.print(
            f"[green]registered {project.model_name} {launched.version}[/green] (alias challenger)"
        )
        return
    console.print(f"[yellow]{launched.detail}: nothing registered[/yellow]", highlight=False)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to the ``kubeloop`` CLI."""
    app.command("monitor")(monitor)
    app.command("trigger")(trigger_cmd)
    app.add_typer(rollout_app, name="rollout")
    app.command("lineage")(lineage_cmd)
    app.add_typer(metrics_app, name="metrics")


def main() -> None:
    """``python -m monitoring``: the monitor command alone."""
    typer.run(monitor)
