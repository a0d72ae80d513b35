"""The ``kubeloop`` command line: a thin typer layer over the plain functions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from kubeloop.cli.monitor import register as register_monitoring
from kubeloop.cli.serve import serve
from kubeloop.cli.support import DEFAULT_SPEC, SpecOption, console, context, friendly
from kubeloop.sample_data import Drift

if TYPE_CHECKING:
    from monitoring.triggers import Trigger

app = typer.Typer(help="kubeloop: the closed ML loop on Kubernetes.", no_args_is_help=True)
data_app = typer.Typer(help="Sample data and dataset versions.", no_args_is_help=True)
run_app = typer.Typer(help="Run pipelines locally or on a KFP cluster.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(run_app, name="run")


@data_app.command("generate")
@friendly
def data_generate(
    out: Annotated[Path, typer.Option(help="Output .parquet or .csv")] = Path(
        ".kubeloop/raw/building_energy.parquet"
    ),
    rows: Annotated[int, typer.Option(min=1)] = 100_000,
    seed: int = 42,
    buildings: Annotated[int, typer.Option(min=1)] = 500,
    weeks: Annotated[int, typer.Option(min=1)] = 6,
    drift: Annotated[Drift, typer.Option(help="Shift the data like production drift")] = "none",
    strength: Annotated[float, typer.Option(help="0 (none) to 1 (strong)")] = 0.0,
) -> None:
    """Write the building energy sample dataset in chunks (deterministic for a seed)."""
    from rich.progress import Progress

    from kubeloop.sample_data import GeneratorConfig, write

    try:
        cfg = GeneratorConfig(
            rows=rows, seed=seed, buildings=buildings, weeks=weeks, drift=drift, strength=strength
        )  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("generating rows", total=rows)
        write(cfg, out, progress=lambda n: progress.advance(bar, n))
    console.print(f"wrote {rows:,} rows to {out}")


@data_app.command("example")
@friendly
def data_example(
    name: Annotated[str, typer.Argument(help="diabetes (regression) or wine (classification)")],
    out: Annotated[Path, typer.Option(help="Output .csv or .parquet")] = Path("example.csv"),
) -> None:
    """Write a dataset scikit-learn ships, with an id and a time column: data to try init on."""
    from kubeloop.errors import SpecError
    from kubeloop.example_data import EXAMPLES, example_table

    if name not in EXAMPLES:
        raise SpecError(f"no example named '{name}': choose {' or '.join(EXAMPLES)}")
    frame = example_table(name)  # type: ignore[arg-type]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    _, id_column, time_column, target = EXAMPLES[name]
    console.print(
        f"wrote {len(frame)} rows to {out} (id {id_column}, time {time_column}, target {target})",
        highlight=False,
    )


@data_app.command("restore")
@friendly
def data_restore(
    run_id: Annotated[str, typer.Argument(help="MLflow run whose training data to restore")],
    out: Annotated[Path, typer.Option(help="Where to write the dataset")] = Path("dataset.parquet"),
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Restore the exact dataset a training run saw, from the DVC remote (reproducibility)."""
    import mlflow

    from kubeloop import model_store
    from kubeloop.data_version import checkout

    _, settings = context(spec)
    model_store.configure(settings)
    pointer = mlflow.artifacts.load_text(f"runs:/{run_id}/data/dataset.parquet.dvc")
    console.print(f"restored {checkout(settings, pointer, out)} (run {run_id})")


WaitOption = Annotated[
    float | None,
    typer.Option(
        help="With --host: wait up to this many seconds for the run, then report it "
        "(exit 1 unless it registered a version)"
    ),
]


@run_app.command("training")
@friendly
def run_training(
    spec: SpecOption = DEFAULT_SPEC,
    source: Annotated[str | None, typer.Option(help="Override data.source")] = None,
    host: Annotated[
        str | None, typer.Option(envvar="KFP_HOST", help="KFP API server URL: submit there")
    ] = None,
    run_name: Annotated[str | None, typer.Option()] = None,
    token: Annotated[
        str | None, typer.Option(envvar="KFP_TOKEN", help="Bearer token for the KFP API")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print every step's log (kfp.local)")
    ] = False,
    wait: WaitOption = None,
) -> None:
    """Run the training pipeline locally (kfp.local) or submit it to a KFP server (--host).

    A manual trigger: a run in progress for the same model is terminated and this one starts.
    """
    _trigger(spec, "manual", "started by hand", source, host, token, run_name, verbose, wait)


TRIGGERS = {"schedule": "schedule", "merge": "merge", "new-data": "new_data"}


@app.command("trigger")
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
        why = new_rows_reason(
            source_rows(project, settings, source),
            trained_rows(client, project, settings),
            project.monitoring.new_source_rows,
        )
        if why is None:
            console.print("not enough new rows at the source: no run started")
            return
        reason = why
    _trigger(spec, TRIGGERS[kind], reason or kind, source, host, token, None, False, wait)  # type: ignore[arg-type]


def _trigger(
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
    from monitoring.settings import MonitoringSettings
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


@app.command("init")
@friendly
def init_cmd(
    name: Annotated[str, typer.Argument(help="Project name: lower case, digits, - and _")],
    data: Annotated[Path, typer.Option(help="A CSV or Parquet file of your data")],
    target: Annotated[str, typer.Option(help="The column the model predicts")],
    entity: Annotated[
        str | None, typer.Option(help="Entity id column (default: the first *_id column)")
    ] = None,
    timestamp: Annotated[
        str | None, typer.Option(help="Event time column (default: the first datetime column)")
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="regression or classification (default: from the target)")
    ] = None,
    folder: Annotated[
        Path | None, typer.Option(help="Where the project goes (default: ./NAME)")
    ] = None,
) -> None:
    """Scaffold a project from a data file: infer types, rules and features, write the spec."""
    import os

    from kubeloop.scaffold import infer, read_table, write_project

    folder = folder or Path(name)
    frame = read_table(data)
    source = os.path.relpath(data.resolve(), folder.resolve())
    inference = infer(frame, name, source, target, entity=entity, timestamp=timestamp, task=task)
    path = write_project(folder, inference)
    console.print(f"[green]wrote {path}[/green] from {len(frame):,} rows of {data}")
    console.print("[bold]inferred[/bold]")
    for line in inference.inferred:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    console.print("[bold]check[/bold]")
    for line in inference.check:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    console.print(f"next: kubeloop run training --spec {path}", highlight=False)


@app.command("compile")
@friendly
def compile_cmd(
    out: Annotated[Path, typer.Option(help="IR YAML path")] = Path("pipelines/training.yaml"),
) -> None:
    """Compile the training pipeline to KFP IR YAML."""
    from pipelines.runner import compile_pipeline

    console.print(f"wrote {compile_pipeline(out)}")


@app.command("promote")
@friendly
def promote_cmd(
    version: Annotated[str, typer.Argument(help="Registry number, V-name or alias")],
    spec: SpecOption = DEFAULT_SPEC,
    approve: Annotated[bool, typer.Option("--approve", help="Record your approval")] = False,
    approver: Annotated[str | None, typer.Option(help="Who approves (default: $USER)")] = None,
) -> None:
    """Move the champion alias to a version; requires --approve (recorded on the version)."""
    from kubeloop import model_store, registry

    project, settings = context(spec)
    client = model_store.configure(settings)
    promoted = registry.promote(
        client, project.model_name, version, approve=approve, approver=approver
    )
    console.print(
        f"[green]{project.model_name} champion -> {promoted.tags.get(registry.TAG_NAME)}"
        f" (version {promoted.version})[/green]"
    )


@app.command("versions")
@friendly
def versions_cmd(spec: SpecOption = DEFAULT_SPEC) -> None:
    """List the registry versions of the spec's model with their names and aliases."""
    from rich.table import Table

    from kubeloop import model_store, registry

    project, settings = context(spec)
    client = model_store.configure(settings)
    versions = registry.all_versions(client, project.model_name)
    if not versions:
        console.print(f"{project.model_name} has no registered versions yet")
        return
    table = Table("version", "name", "aliases", "data", "run")
    aliases = registry.aliases_by_version(client, project.model_name)
    for v in sorted(versions, key=lambda v: int(v.version)):
        table.add_row(
            str(v.version),
            v.tags.get(registry.TAG_NAME, ""),
            ",".join(aliases.get(str(v.version), [])),
            v.tags.get(registry.TAG_DATA, "")[:12],
            v.run_id or "",
        )
    Console().print(table)


@app.command("materialize")
@friendly
def materialize_cmd(spec: SpecOption = DEFAULT_SPEC) -> None:
    """Materialize the spec's feature views into the online store up to now (incremental)."""
    from components.features.core import materialize_incremental

    project, settings = context(spec)
    views = materialize_incremental(project, settings)
    console.print(f"materialized {', '.join(views)} up to now")


@app.command("feature-store-yaml")
@friendly
def feature_store_yaml(spec: SpecOption = DEFAULT_SPEC) -> None:
    """Print the feature_store.yaml equivalent of the current settings (for `feast serve`)."""
    from kubeloop.feature_store import feast_project, render_yaml

    project, settings = context(spec)
    typer.echo(render_yaml(settings, feast_project(project)))


@app.command("kfp-gateway")
def kfp_gateway(
    api: Annotated[str, typer.Option(envvar="KUBELOOP_KFP_API_URL", help="KFP API server URL")],
    ui: Annotated[str, typer.Option(envvar="KUBELOOP_KFP_UI_URL", help="KFP UI URL")],
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8888,
    host: str = "0.0.0.0",
) -> None:
    """Serve the KFP gateway data scientists reach KFP through: it forwards everything but the
    calls that terminate or delete runs (pipelines/gateway.py)."""
    import uvicorn

    from pipelines.gateway import Upstreams
    from pipelines.gateway import app as gateway_app

    uvicorn.run(gateway_app(Upstreams(api=api, ui=ui)), host=host, port=port, log_level="info")


app.command("serve")(serve)
register_monitoring(app)  # monitor, rollout, lineage
