"""Factories for test data and specs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from kubeloop.sample_data import GeneratorConfig, generate
from kubeloop.spec import ProjectSpec, load_spec

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_SPEC = REPO / "examples" / "building_energy" / "spec.yaml"


def sample_frame(rows: int = 3_000, seed: int = 7, buildings: int = 50, **kw) -> pd.DataFrame:
    return generate(GeneratorConfig(rows=rows, seed=seed, buildings=buildings, **kw))


def write_sample(path: Path, rows: int = 3_000, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = sample_frame(rows, **kw)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def example_spec(source: Path | str | None = None, **changes) -> ProjectSpec:
    """The bundled spec, with its data source and any top-level sections replaced."""
    spec = load_spec(EXAMPLE_SPEC)
    update = dict(changes)
    if source is not None:
        update["data"] = spec.data.model_copy(update={"source": str(source)})
    return spec.model_copy(update=update)
