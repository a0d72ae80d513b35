"""Run the training steps in this process, in pipeline order, without kfp.

For notebooks, debugging and benchmarks: the same ``run_step`` functions the kfp components call,
chained through files in a scratch folder, with each step's wall time. Clusters and
``kubeloop run training`` use the real pipeline (``pipelines.training``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

from components.evaluate.core import run_step as evaluate_step
from components.features.core import run_step as features_step
from components.ingest.core import run_step as ingest_step
from components.register.core import run_step as register_step
from components.train.core import run_step as train_step
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec


@dataclass
class StepsResult:
    version: str  # '' when the gate rejected the model
    run_id: str
    decision: dict
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _timed(timings: dict[str, float], name: str, progress: Callable[[str], None] | None):
    if progress:
        progress(name)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def run_steps(
    spec: ProjectSpec,
    settings: PlatformSettings,
    source: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> StepsResult:
    """ingest -> features -> train -> evaluate -> register, in this process."""
    import json

    timings: dict[str, float] = {}
    with TemporaryDirectory(prefix="kubeloop-steps-") as tmp:
        scratch = Path(tmp)
        with _timed(timings, "ingest", progress):
            data = ingest_step(spec, settings, source or "", str(scratch / "dataset.parquet"))
        with _timed(timings, "features", progress):
            materialized = features_step(
                spec, settings, str(scratch / "dataset.parquet"), str(scratch / "labels.parquet")
            )
        with _timed(timings, "train", progress):
            trained = train_step(
                spec,
                settings,
                str(scratch / "labels.parquet"),
                {
                    **data,
                    "materialized": f"{materialized.materialized_from.isoformat()}/"
                    f"{materialized.materialized_to.isoformat()}",
                },
                str(scratch / "test.parquet"),
            )
        with _timed(timings, "evaluate", progress):
            evaluate_step(
                spec,
                settings,
                trained.run_id,
                trained.model_uri,
                str(scratch / "test.parquet"),
                str(scratch / "decision.json"),
            )
        with _timed(timings, "register", progress):
            version = register_step(
                spec,
                settings,
                str(scratch / "decision.json"),
                trained.run_id,
                trained.model_uri,
                data["md5"],
            )
        decision = json.loads((scratch / "decision.json").read_text())
    return StepsResult(version=version, run_id=trained.run_id, decision=decision, timings=timings)
