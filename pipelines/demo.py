"""``make demo``: the loop on the embedded default, from a fresh clone, with progress.

Generates sample data, trains and registers a model with the kfp.local pipeline, approves it
as champion, and prints a summary. Everything lands in the work folder (``.kubeloop``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from components import model_store, registry
from components.sample_data import GeneratorConfig, write
from components.settings import PlatformSettings
from components.spec import load_spec
from pipelines.runner import run_local

SPEC = Path(__file__).resolve().parents[1] / "examples" / "building_energy" / "spec.yaml"
ROWS = int(os.environ.get("KUBELOOP_DEMO_ROWS", "50000"))
console = Console()


def main() -> None:
    started = time.perf_counter()
    settings = PlatformSettings()
    os.environ.update(settings.export())
    spec = load_spec(SPEC)

    console.rule("[bold]1/3 sample data")
    write(GeneratorConfig(rows=ROWS, seed=42), spec.data.source)
    console.print(f"{ROWS:,} meter readings -> {spec.data.source}")

    console.rule("[bold]2/3 training pipeline (kfp.local)")
    result = run_local(spec, settings)
    if not result.registered:
        console.print("[yellow]the evaluation gate rejected the model; see the log above[/yellow]")
        raise SystemExit(1)

    console.rule("[bold]3/3 approval")
    client = model_store.configure(settings)
    champion = registry.promote(
        client, spec.model_name, result.version, approve=True, approver="make-demo"
    )
    run = client.get_run(champion.run_id)

    table = Table("what", "value", title="kubeloop demo")
    table.add_row("champion", f"{champion.tags[registry.TAG_NAME]} (version {champion.version})")
    for name in ("rmse", "mae", "r2"):
        table.add_row(f"held-out {name}", f"{run.data.metrics[f'test_{name}']:.3f}")
    table.add_row("data version (DVC)", champion.tags[registry.TAG_DATA][:12])
    table.add_row("MLflow store", settings.tracking_uri)
    table.add_row("wall time", f"{time.perf_counter() - started:.0f} s")
    console.print(table)


if __name__ == "__main__":
    main()
