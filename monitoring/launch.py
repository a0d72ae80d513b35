"""Launch a retraining run: the training pipeline again, locally or on a KFP server.

Retraining re-enters the same pipeline as the first training (ingest, features, train, evaluate
gate, register), so the new model gets the next automatic revision (``V<tag>.<manual>.<auto+1>``)
and the ``challenger`` alias only if it beats the champion on the newest held-out rows.

Backends behind one abstract base, chosen by name (``KUBELOOP_LAUNCHER``):

- ``local``: ``kfp.local`` in this environment (embedded default); synchronous, so the run has
  finished when ``launch`` returns.
- ``kfp``: ``kfp.Client`` against the API server (``KUBELOOP_KFP_HOST``) with the compiled
  pipeline, an experiment, a run name and the parameters; asynchronous, ``status`` polls it.
"""

from __future__ import annotations

import abc
import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

from kubeloop.spec import ProjectSpec
from monitoring.errors import LaunchError
from monitoring.settings import MonitoringSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Launched:
    """A started retraining run."""

    run_id: str  # the backend's handle
    finished: bool  # True when the run already ended (local)
    succeeded: bool | None = None  # known once finished
    version: str = ""  # registered V-name ('' if the gate rejected the model, or not yet known)
    detail: str = ""


class Launcher(abc.ABC):
    """Starts the training pipeline for a spec and tells how a started run is doing."""

    name: ClassVar[str]

    def __init__(self, settings: MonitoringSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def launch(self, spec: ProjectSpec, *, reason: str, source: str | None = None) -> Launched:
        """Start a training run for ``spec`` (``source`` overrides the spec's data source)."""

    def status(self, run_id: str) -> Launched | None:
        """How a started run is doing; None when the backend cannot tell."""
        return None


def run_name(spec: ProjectSpec, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{spec.name}-retrain-{stamp}"


class LocalLauncher(Launcher):
    """The pipeline with kfp.local's subprocess runner, in this environment."""

    name = "local"

    def launch(self, spec: ProjectSpec, *, reason: str, source: str | None = None) -> Launched:
        from pipelines.runner import run_local

        handle = f"local:{run_name(spec)}"
        log.info("launching %s (%s)", handle, reason)
        try:
            result = run_local(spec, self.settings, source, progress=log.info)
        except Exception as exc:  # noqa: BLE001 - any pipeline failure is the run's outcome
            return Launched(handle, finished=True, succeeded=False, detail=f"failed: {exc}")
        detail = (
            f"registered {result.version}"
            if result.registered
            else "rejected by the evaluation gate"
        )
        return Launched(
            handle, finished=True, succeeded=True, version=result.version, detail=detail
        )


class KfpLauncher(Launcher):
    """A run of the compiled pipeline on a KFP API server."""

    name = "kfp"
    FINISHED = {"SUCCEEDED": True, "FAILED": False, "CANCELED": False, "SKIPPED": False}

    def __init__(self, settings: MonitoringSettings) -> None:
        super().__init__(settings)
        if not settings.kfp_host:
            raise LaunchError("the kfp launcher needs KUBELOOP_KFP_HOST (the KFP API server URL)")
        self._client = None

    def client(self):
        if self._client is None:
            import kfp

            token = self.settings.kfp_token.get_secret_value() if self.settings.kfp_token else None
            self._client = kfp.Client(host=self.settings.kfp_host, existing_token=token)
        return self._client

    def launch(self, spec: ProjectSpec, *, reason: str, source: str | None = None) -> Launched:
        from pipelines.runner import arguments, compile_pipeline

        name = run_name(spec)
        try:
            with tempfile.TemporaryDirectory(prefix="kubeloop-kfp-") as tmp:
                package = compile_pipeline(
                    Path(tmp) / "training.yaml", self.settings.pipeline_image
                )
                result = self.client().create_run_from_pipeline_package(
                    str(package),
                    arguments=arguments(spec, source),
                    run_name=name,
                    experiment_name=self.settings.kfp_experiment,
                )
        except Exception as exc:
            raise LaunchError(
                f"could not submit the retraining run to {self.settings.kfp_host}: {exc}"
            ) from exc
        log.info("submitted KFP run %s (%s): %s", result.run_id, name, reason)
        return Launched(result.run_id, finished=False, detail=f"KFP run {name}")

    def status(self, run_id: str) -> Launched | None:
        try:
            run = self.client().get_run(run_id)
        except Exception as exc:  # noqa: BLE001 - unknown: the run keeps its slot until timeout
            log.warning("cannot read KFP run %s: %s", run_id, exc)
            return None
        state = str(run.state or "").upper()
        if state not in self.FINISHED:
            return Launched(run_id, finished=False, detail=state.lower() or "pending")
        return Launched(run_id, finished=True, succeeded=self.FINISHED[state], detail=state.lower())


LAUNCHERS: dict[str, type[Launcher]] = {cls.name: cls for cls in (LocalLauncher, KfpLauncher)}


def make_launcher(settings: MonitoringSettings) -> Launcher | None:
    """The configured launcher; None when launching is disabled (``KUBELOOP_LAUNCHER=none``)."""
    name = settings.launcher_name
    return None if name == "none" else LAUNCHERS[name](settings)
