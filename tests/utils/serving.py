"""Helpers for tests and benchmarks: seed a registry, send load, fake the server's collaborators.

``seed_example`` fills a work folder with features and registered models (made by
tests/utils/models.py: version 1 ``champion``, the last ``challenger``); the server itself runs
through ``serving.process``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec
from serving.process import REPO

if TYPE_CHECKING:
    from serving.prediction_log import LogBatch


def materialize(raw, spec: ProjectSpec, settings: PlatformSettings) -> None:
    """Engineer features from raw rows into the configured Feast stores (offline and online)."""
    from components.features.core import materialize_features

    materialize_features(raw, spec, settings)


def write_spec(path: Path, spec: ProjectSpec, **model_changes: Any) -> Path:
    """Write ``spec`` (with model section changes, e.g. ``name=...``) as a spec YAML file."""
    from kubeloop.spec import dump_spec

    data = dump_spec(spec)
    data["model"].update(model_changes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


EXAMPLE_SPEC = REPO / "examples" / "building_energy" / "spec.yaml"


@dataclass(frozen=True)
class Seeded:
    """A work folder with the bundled example's features in Feast and registered models."""

    work_dir: Path
    spec_path: Path
    model_name: str
    labels: list[str]  # V-names of registry versions 1..n (1 is champion, n challenger)
    entities: list[int]  # entity ids present in the online store

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.work_dir / 'mlflow.db'}"

    def settings(self, **changes: Any) -> PlatformSettings:
        return PlatformSettings(
            **{"work_dir": self.work_dir, "MLFLOW_TRACKING_URI": self.tracking_uri, **changes}
        )

    def raw(self):
        import pandas as pd

        return pd.read_parquet(self.work_dir / "raw.parquet")

    def spec(self) -> ProjectSpec:
        from kubeloop.spec import load_spec

        return load_spec(self.spec_path)


def seed_example(
    work_dir: Path,
    *,
    rows: int = 2_000,
    buildings: int = 40,
    variants: Sequence[Mapping[str, Any]] = ({"max_iter": 20}, {"max_iter": 40}),
    mlflow_template: Path | None = None,
) -> Seeded:
    """Seed ``work_dir`` once (later calls reuse it): sample data, features materialized into
    the SQLite online store, one model per variant registered (version 1 champion, the last
    challenger). ``mlflow_template`` is an empty migrated MLflow store to copy (faster)."""
    import json
    import shutil

    from kubeloop.sample_data import GeneratorConfig, generate
    from kubeloop.spec import load_spec
    from tests.utils.models import register_model, train_model

    marker = work_dir / "seeded.json"
    if marker.exists():
        data = json.loads(marker.read_text())
        return Seeded(
            work_dir=Path(data["work_dir"]),
            spec_path=Path(data["spec_path"]),
            model_name=data["model_name"],
            labels=data["labels"],
            entities=data["entities"],
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    if mlflow_template is not None and not (work_dir / "mlflow.db").exists():
        shutil.copyfile(mlflow_template, work_dir / "mlflow.db")
    spec = load_spec(EXAMPLE_SPEC)
    spec_path = write_spec(work_dir / "spec.yaml", spec)
    seeded = Seeded(work_dir, spec_path, spec.model_name, [], [])
    settings = seeded.settings()
    raw = generate(GeneratorConfig(rows=rows, seed=7, buildings=buildings))
    raw.to_parquet(work_dir / "raw.parquet", index=False)
    materialize(raw, spec, settings)
    labels = [
        register_model(
            settings, spec, train_model(raw, spec, settings, params=params), champion=i == 0
        ).label
        for i, params in enumerate(variants)
    ]
    entities = sorted(int(e) for e in raw[spec.entity_key].unique())
    seeded = Seeded(work_dir, spec_path, spec.model_name, labels, entities)
    marker.write_text(
        json.dumps(
            {
                "work_dir": str(work_dir),
                "spec_path": str(spec_path),
                "model_name": spec.model_name,
                "labels": labels,
                "entities": entities,
            }
        )
    )
    return seeded


async def post_many(
    url: str,
    path: str,
    bodies: Sequence[bytes],
    headers: Mapping[str, str] | None = None,
    concurrency: int = 32,
) -> list[tuple[int, bytes]]:
    """POST each body over ``concurrency`` keep-alive connections; (status, body) in order.

    A minimal HTTP/1.1 client (the server always sends Content-Length): sending thousands of
    requests through httpx would cost the test more CPU than the server spends on them."""
    import asyncio
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
        "Content-Type: application/json\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    ).encode()
    results: list[tuple[int, bytes]] = [(0, b"")] * len(bodies)
    pending = iter(range(len(bodies)))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            for i in pending:
                body = bodies[i]
                writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
                raw = await reader.readuntil(b"\r\n\r\n")
                lines = raw.decode("latin-1").split("\r\n")
                length = next(
                    int(line.split(":", 1)[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                )
                results[i] = (int(lines[0].split()[1]), await reader.readexactly(length))
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
    return results


# -- in-process fakes (unit tests, the bench's payload check) ----------------------------------
class FakeRegistry:
    """The registry calls the server makes, in memory: aliases, version tags, model tags.

    ``models`` maps registry version numbers to ``LoadedModel``; versions in ``broken`` fail to
    load. Pass ``registry.load`` as the repository's ``loader``.
    """

    def __init__(
        self,
        name: str,
        models: Mapping[str, Any],
        aliases: Mapping[str, str],
        broken: Sequence[str] = (),
    ):
        self.name = name
        self.models = dict(models)
        self.aliases = dict(aliases)
        self.tags: dict[str, str] = {}
        self.broken = set(broken)
        self.calls = 0

    def get_registered_model(self, name: str) -> Any:
        from types import SimpleNamespace

        self.calls += 1
        if name != self.name:
            error = LookupError(f"no registered model {name}")
            error.error_code = "RESOURCE_DOES_NOT_EXIST"  # type: ignore[attr-defined]
            raise error
        return SimpleNamespace(name=name, aliases=dict(self.aliases), tags=dict(self.tags))

    def get_model_version(self, name: str, version: str) -> Any:
        from types import SimpleNamespace

        from kubeloop.registry import TAG_NAME

        model = self.models[str(version)]
        return SimpleNamespace(version=str(version), tags={TAG_NAME: model.label})

    def set_registered_model_tag(self, name: str, key: str, value: str) -> None:
        self.tags[key] = value

    def load(self, client: Any, name: str, version: Any) -> Any:
        if str(version.version) in self.broken:
            raise OSError(f"artifact of version {version.version} is missing")
        return self.models[str(version.version)]


class RecordingLog:
    """A prediction log that keeps the batches in memory."""

    def __init__(self) -> None:
        self.batches: list[Any] = []

    def start(self) -> None:
        return None

    def close(self, timeout: float = 0.0) -> None:
        return None

    def submit(self, batch: Any) -> bool:
        self.batches.append(batch)
        return True

    def report(self) -> None:
        return None

    def counts(self) -> dict[str, int]:
        return {"written": sum(len(b) for b in self.batches)}

    def rows(self, role: str | None = None) -> list[dict[str, Any]]:
        """The rows the log would store, converted as the spool and the shipper convert them."""
        import orjson

        from serving.shipper import store_table
        from serving.spool import to_table

        rows = [row for b in self.batches for row in store_table(to_table([b])).to_pylist()]
        for row in rows:
            row["features"] = orjson.loads(row["features"])
            if row["probabilities"] is not None:
                row["probabilities"] = orjson.loads(row["probabilities"])
        return [row for row in rows if role in (None, row["role"])]


def loaded_model(
    model: Any,
    features: Sequence[str],
    version: str = "1",
    name: str = "demo",
    label: str | None = None,
) -> Any:
    """A ``LoadedModel`` around any fitted estimator."""
    from kubeloop.registry import LoadedModel

    return LoadedModel(
        name=name,
        version=version,
        label=label or f"V1.0.{int(version) - 1}",
        model=model,
        metadata_features=list(features),
    )


def fake_runtime(
    registry: FakeRegistry,
    settings: Any = None,
    features: Any = None,
    prediction_log: Any = None,
    poll: bool = True,
    task: str = "regression",
) -> Any:
    """A ``Runtime`` over a ``FakeRegistry`` (polled once, so it is ready when it returns)."""
    from serving.metrics import Metrics
    from serving.models import ModelRepository
    from serving.service import Runtime
    from serving.settings import ServingSettings

    settings = settings or ServingSettings()
    metrics = Metrics(settings.prediction_buckets)
    models = ModelRepository(
        lambda: registry,
        registry.name,
        champion_alias=settings.champion_alias,
        candidate_alias=settings.candidate_alias,
        shadow=settings.shadow_enabled,
        canary_weight=settings.canary_weight,
        poll_seconds=settings.registry_poll_seconds,
        metrics=metrics,
        loader=registry.load,
        feature_check=features.check if features is not None else None,
    )
    runtime = Runtime(
        settings,
        registry.name,
        metrics,
        models,
        features,
        prediction_log if prediction_log is not None else RecordingLog(),
        task,
    )
    if poll:
        models.poll_once()
    return runtime


def static_features(
    names: Sequence[str],
    rows: Mapping[int | str, Sequence[float]],
    join_key: str = "entity_id",
    value_type: str = "INT64",
) -> Any:
    """``OnlineFeatures`` over an in-memory table (entity -> values in ``names`` order)."""
    from datetime import UTC, datetime

    from serving.feature_layout import EntityRow, FeatureLayout
    from serving.features import OnlineFeatures
    from serving.online_lookup import OnlineLookup

    layout = FeatureLayout(
        project="test",
        join_key=join_key,
        value_type=value_type,
        views=(("view", tuple(names)),),
        serialization_version=3,
    )

    class StaticLookup(OnlineLookup):
        backend = "static"

        async def read_rows(self, entities):
            now = datetime.now(UTC)
            return [EntityRow(list(rows[e]), now) if e in rows else None for e in entities]

        async def close(self) -> None:
            pass

    features = OnlineFeatures(lambda: (layout, StaticLookup(layout)))
    features.open()
    return features


def log_batch(base: str, n: int, role: str = "champion", entities=None) -> LogBatch:
    """A prediction log batch of ``n`` rows made now: features ``a`` and ``b`` (``0, 1, 2, ...``),
    predictions ``a * 10``, request ids ``<base>-0`` to ``<base>-<n - 1>``."""
    import time

    import numpy as np

    from serving.prediction_log import LogBatch

    X = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    return LogBatch(
        base_id=base,
        ts=time.time(),
        positions=None,
        entity_ids=entities,
        feature_names=("a", "b"),
        features=X,
        predictions=X[:, 0] * 10.0,
        model_name="demo",
        model_version="3",
        model_label="V1.0.2",
        role=role,
    )
