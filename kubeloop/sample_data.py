"""Sample data: a building energy regression problem, generated here (nothing is downloaded).

Each row is one meter reading of one building: static attributes (type, floor area, age),
weather (outdoor temperature, humidity), occupancy and the target, ``energy_kwh``. The target
follows heating and cooling physics with noise, so a model can learn it but not perfectly.

``drift`` produces production-like shifted data: ``covariate`` moves the inputs (a heatwave, more
people), ``concept`` changes how inputs map to energy (new equipment), ``both`` does both; the
``strength`` scales the shift (0 = none, 1 = strong).

Rows are produced in chunks so 10M rows never sit in memory; the output is deterministic for a
seed, row count and chunk size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

Drift = Literal["none", "covariate", "concept", "both"]
BUILDING_TYPES = np.array(["office", "retail", "residential"])
# kWh per m2 per hour at rest, by type: offices and shops burn more than homes.
BASE_INTENSITY = np.array([0.030, 0.045, 0.018])
DEFAULT_START = datetime(2026, 9, 1, tzinfo=UTC)


@dataclass(frozen=True)
class GeneratorConfig:
    rows: int = 100_000
    seed: int = 42
    buildings: int = 500
    weeks: int = 6
    start: datetime = DEFAULT_START
    drift: Drift = "none"
    strength: float = 0.0
    chunk_rows: int = 250_000

    def __post_init__(self) -> None:
        if self.rows < 1 or self.buildings < 1 or self.weeks < 1 or self.chunk_rows < 1:
            raise ValueError("rows, buildings, weeks and chunk_rows must be positive")
        if not 0.0 <= self.strength <= 5.0:
            raise ValueError("strength must lie in [0, 5]")
        if self.drift != "none" and self.strength == 0.0:
            raise ValueError(f"drift '{self.drift}' needs a strength above 0")


def _buildings(cfg: GeneratorConfig) -> dict[str, np.ndarray]:
    """Static attributes per building; the same for every chunk and every drift option."""
    rng = np.random.default_rng([cfg.seed, 0])
    n = cfg.buildings
    return {
        "type_idx": rng.choice(3, size=n, p=[0.4, 0.2, 0.4]),
        "floor_area_m2": np.round(rng.lognormal(mean=7.3, sigma=0.6, size=n), 1),
        "building_age_years": np.round(rng.uniform(0, 80, size=n), 1),
        # Better insulation lowers heating and cooling needs; hidden from the data.
        "insulation": rng.uniform(0.6, 1.4, size=n),
    }


def _chunk(cfg: GeneratorConfig, b: dict[str, np.ndarray], start: int, stop: int) -> pd.DataFrame:
    rng = np.random.default_rng([cfg.seed, 1, start])
    i = np.arange(start, stop)
    bid = i % cfg.buildings
    # A grid of readings (one per building per step) keeps (building, time) unique by construction.
    steps = max(1, -(-cfg.rows // cfg.buildings))
    step_s = cfg.weeks * 7 * 86_400 / steps
    offset_s = (i // cfg.buildings) * step_s + rng.uniform(0, step_s * 0.5, size=i.size)
    ts = (pd.Timestamp(cfg.start) + pd.to_timedelta(offset_s, unit="s")).floor("s")
    hour = ts.hour.to_numpy() + ts.minute.to_numpy() / 60
    day = offset_s / 86_400
    weekend = ts.dayofweek.to_numpy() >= 5

    covariate = cfg.strength if cfg.drift in ("covariate", "both") else 0.0
    concept = cfg.strength if cfg.drift in ("concept", "both") else 0.0

    seasonal = 16 - 6 * day / (cfg.weeks * 7)  # autumn cooling
    temp = seasonal + 5 * np.sin((hour - 9) / 24 * 2 * np.pi) + rng.normal(0, 3, i.size)
    temp = temp + 10 * covariate
    humidity = np.clip(rng.normal(65 - 0.8 * (temp - 15), 10, i.size) + 12 * covariate, 5, 100)

    t_idx = b["type_idx"][bid]
    area = b["floor_area_m2"][bid]
    open_hours = (hour >= 8) & (hour <= 19)
    people_per_100m2 = np.where(
        t_idx == 2,
        np.where(open_hours, 1.0, 3.0),  # homes fill up at night
        np.where(open_hours & ~weekend, np.where(t_idx == 0, 6.0, 9.0), 0.4),
    )
    occupancy = np.round(
        rng.poisson(people_per_100m2 * area / 100 * (1 + 0.6 * covariate)).astype(float)
    )

    heating = np.maximum(0.0, 18 - temp)
    cooling = np.maximum(0.0, temp - 24)
    insulation = b["insulation"][bid]
    age = b["building_age_years"][bid]
    intensity = BASE_INTENSITY[t_idx] * (1 + 0.4 * concept)
    energy = area * (
        intensity
        + insulation * (1 + age / 160) * (0.0022 * heating + 0.0030 * (1 + 1.5 * concept) * cooling)
    )
    energy = energy + 0.12 * occupancy * (1 + 0.5 * concept)
    energy = energy * rng.lognormal(0, 0.08, i.size) + rng.normal(0, 2, i.size)
    return pd.DataFrame(
        {
            "building_id": (bid + 1000).astype("int64"),
            "event_timestamp": ts,
            "building_type": BUILDING_TYPES[t_idx],
            "floor_area_m2": area,
            "building_age_years": age,
            "outdoor_temp_c": np.round(temp, 2),
            "humidity_pct": np.round(humidity, 1),
            "occupancy": occupancy,
            "energy_kwh": np.round(np.maximum(energy, 0.0), 3),
        }
    )


def iter_chunks(cfg: GeneratorConfig) -> Iterator[pd.DataFrame]:
    """Yield the dataset chunk by chunk, in row order."""
    b = _buildings(cfg)
    for start in range(0, cfg.rows, cfg.chunk_rows):
        yield _chunk(cfg, b, start, min(cfg.rows, start + cfg.chunk_rows))


def generate(cfg: GeneratorConfig) -> pd.DataFrame:
    """The whole dataset in memory (small sizes: tests, notebooks)."""
    return pd.concat(list(iter_chunks(cfg)), ignore_index=True)


def write(
    cfg: GeneratorConfig, path: str | Path, progress: Callable[[int], None] | None = None
) -> Path:
    """Write the dataset to ``.parquet`` or ``.csv`` chunk by chunk; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"output must end in .parquet or .csv, not '{suffix}'")
    writer: pq.ParquetWriter | None = None
    try:
        for n, chunk in enumerate(iter_chunks(cfg)):
            if suffix == ".csv":
                chunk.to_csv(path, mode="w" if n == 0 else "a", header=n == 0, index=False)
            else:
                table = pa.Table.from_pandas(chunk, preserve_index=False)
                writer = writer or pq.ParquetWriter(path, table.schema)
                writer.write_table(table)
            if progress:
                progress(len(chunk))
    finally:
        if writer is not None:
            writer.close()
    return path


def window(cfg: GeneratorConfig) -> tuple[datetime, datetime]:
    """First and last possible event time of a generated dataset."""
    return cfg.start, cfg.start + timedelta(weeks=cfg.weeks)
