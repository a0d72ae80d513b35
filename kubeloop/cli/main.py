"""The ``kubeloop`` command line: a thin typer layer over the plain functions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kubeloop.cli.monitor import WaitOption, start_training
from kubeloop.cli.monitor import register as register_monitoring
from kubeloop.cli.serve import serve
from kubeloop.cli.support import DEFAULT_SPEC, SpecOption, console, context, friendly
from kubeloop.sample_data import Drift

app = typer.Typer(help="kubeloop: the closed ML loop on Kubernetes.", no_args_is_help=True)
data_app = typer.Typer(help="Sample data and dataset versions.", no_args_is_help=True)
run_app = typer.Typer(help="Run pipelines locally or on a KFP cluster.", no_args_is_help=True)
log_app = typer.Typer(help="The prediction log.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(run_app, name="run")
app.add_typer(log_app, name="log")


@app.callback()
def quiet_downloads() -> None:
    """MLflow draws a progress bar for each artifact it downloads, however small (a lineage
    record, a reference sample): in these commands' output the bars only bury the answer."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


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
    ref: Annotated[
        str,
        typer.Argument(help="Registry version (number, V-name or alias) or MLflow run id"),
    ],
    out: Annotated[Path, typer.Option(help="Where to write the dataset")] = Path("dataset.parquet"),
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Restore the exact dataset a model version (or training run) saw, from the DVC remote
    (reproducibility)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from kubeloop import model_store, registry
    from kubeloop.data_version import checkout
    from kubeloop.errors import ModelNotFoundError

    project, settings = context(spec)
    client = model_store.configure(settings)
    model = settings.model_name(project)
    try:
        run_id = registry.find_version(client, model, ref).run_id
    except ModelNotFoundError:
        if ref.isdigit() or ref.startswith("V"):
            raise
        run_id = ref  # not a version of the model, nor an alias: a run id
    try:
        pointer = mlflow.artifacts.load_text(f"runs:/{run_id}/data/dataset.parquet.dvc")
    except MlflowException as exc:
        raise ModelNotFoundError(
            f"{ref}: no dataset to restore (no version or alias of {model} by that name, and "
            f"no training run {run_id} with data/dataset.parquet.dvc)"
        ) from exc
    console.print(f"restored {checkout(settings, pointer, out)} (run {run_id})")


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
    start_training(spec, "manual", "started by hand", source, host, token, run_name, verbose, wait)


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
    approver: Annotated[
        str | None,
        typer.Option(
            help="Who approves, where the registry has no login (default: $USER); with a "
            "login, the approval is recorded as the authenticated user"
        ),
    ] = None,
) -> None:
    """Move the champion alias to a version; requires --approve (recorded on the version).
    Acts on the model this environment serves: with KUBELOOP_SERVED_MODEL=production, the
    production model (a rollback there), else the spec's model."""
    from kubeloop import model_store, registry
    from monitoring import lineage

    project, settings = context(spec)
    client = model_store.configure(settings)
    model = settings.model_name(project)
    previous = registry.by_alias(client, model, registry.CHAMPION)
    who = registry.recorded_approver(client, approver) if approve else None
    promoted = registry.promote(client, model, version, approve=approve, approver=who)
    lineage.record_after_promotion(client, model, str(promoted.version))
    was = f", was {previous.tags.get(registry.TAG_NAME)}" if previous is not None else ""
    console.print(
        f"[green]{model} champion -> {promoted.tags.get(registry.TAG_NAME)}"
        f" (version {promoted.version}{was}), approved by {who}[/green]"
    )


@app.command("versions")
@friendly
def versions_cmd(spec: SpecOption = DEFAULT_SPEC) -> None:
    """List the registry versions of the served model (KUBELOOP_SERVED_MODEL: the spec's
    model, or the production model) with their names and aliases."""
    from rich.table import Table

    from kubeloop import model_store, registry

    project, settings = context(spec)
    client = model_store.configure(settings)
    model = settings.model_name(project)
    versions = registry.all_versions(client, model)
    if not versions:
        console.print(f"{model} has no registered versions yet")
        return
    table = Table("version", "name", "aliases", "rollout", "data", "run", title=model)
    aliases = registry.aliases_by_version(client, model)
    for v in sorted(versions, key=lambda v: int(v.version)):
        table.add_row(
            str(v.version),
            v.tags.get(registry.TAG_NAME, ""),
            ",".join(aliases.get(str(v.version), [])),
            v.tags.get(registry.TAG_ROLLOUT_STATE, ""),
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


@log_app.command("prune")
@friendly
def log_prune(
    keep_days: Annotated[
        float,
        typer.Option(
            min=0.001,
            envvar="KUBELOOP_PREDICTION_LOG_RETENTION_DAYS",
            help="Keep the predictions and feedback of the last this many days.",
        ),
    ],
    dry_run: Annotated[bool, typer.Option(help="Count what would go; delete nothing.")] = False,
    spec: SpecOption = DEFAULT_SPEC,
) -> None:
    """Delete the prediction log's rows older than the retention (KUBELOOP_PREDICTION_LOG_URL):
    whole day partitions dropped, the rest oldest first, a batch per transaction; refuses a
    retention shorter than a window the spec reads from the log."""
    from sqlalchemy import make_url

    from kubeloop.log_retention import check_retention, cutoff, every_few_seconds, prune
    from kubeloop.log_store import make_engine

    project, settings = context(spec)
    check_retention(keep_days, project)
    before = cutoff(keep_days)
    where = make_url(settings.log_url).render_as_string(hide_password=True)
    console.print(f"prediction log {where}: rows before {before:%F %T} UTC", highlight=False)
    engine = make_engine(settings.log_url)
    try:
        pruned = prune(
            engine,
            before,
            dry_run=dry_run,
            on_batch=every_few_seconds(
                lambda table, rows: console.print(f"  {table}: {rows:,} deleted so far")
            ),
        )
    finally:
        engine.dispose()
    verb = "would delete" if dry_run else "deleted"
    dropped = "would be dropped" if dry_run else "dropped"
    days = f" ({pruned.partitions} day partitions {dropped})" if pruned.partitions else ""
    console.print(
        f"{verb} {pruned.predictions:,} predictions{days} and {pruned.feedback:,} feedback rows",
        highlight=False,
    )


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
