"""Launch a retraining run: the training pipeline again, locally or on a KFP server.

Retraining re-enters the same pipeline as the first training (ingest, features, train, evaluate
gate, register), so the new model gets the next automatic revision (``V<tag>.<manual>.<auto+1>``)
and the ``challenger`` alias only if it beats the champion on the newest held-out rows.

Backends behind one abstract base, chosen by name (``KUBELOOP_LAUNCHER``):

- ``local``: ``kfp.local`` in this environment (embedded default); synchronous, so the run has
  finished when ``launch`` returns.
- ``kfp``: ``kfp.Client`` against the API server (``KUBELOOP_KFP_HOST``) with the compiled
  pipeline, an experiment, a run name and the parameters; asynchronous, ``status`` polls it.

``terminate`` stops a run a newer trigger supersedes (``monitoring.state``): on KFP the API's
terminate call, locally a signal to the process that runs it (its handle names host and pid).
"""

from __future__ import annotations

import abc
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Callable
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
    error: Exception | None = None  # why a local run failed, for a caller that reports it


class Launcher(abc.ABC):
    """Starts the training pipeline for a spec and tells how a started run is doing."""

    name: ClassVar[str]

    def __init__(self, settings: MonitoringSettings) -> None:
        self.settings = settings

    @abc.abstractmethod
    def launch(
        self,
        spec: ProjectSpec,
        *,
        reason: str,
        source: str | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> Launched:
        """Start a training run for ``spec`` (``source`` overrides the spec's data source);
        ``on_start`` gets the run's handle as soon as it exists (before a local run ends), so a
        newer trigger can supersede it."""

    def status(self, run_id: str, model_name: str) -> Launched | None:
        """How a started run is doing; None when the backend cannot tell."""
        return None

    @abc.abstractmethod
    def terminate(self, run_id: str) -> str:
        """Stop a superseded run; says what was done (never raises: the new run starts anyway)."""


def run_name(spec: ProjectSpec, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"{spec.name}-retrain-{stamp}"


def local_handle(spec: ProjectSpec) -> str:
    """``local:<host>:<pid>:<run name>``: where a local run can be signalled from."""
    return f"local:{socket.gethostname()}:{os.getpid()}:{run_name(spec)}"


def terminate_local(handle: str) -> str:
    """SIGTERM to the process of a local run, if it runs on this host and is not this process.

    A process that leads its group (a CLI from a shell, a CronJob's container) gets the signal
    for its whole group, so the steps kfp.local started die with it.
    """
    try:
        _, host, pid_text, _ = handle.split(":", 3)
        pid = int(pid_text)
    except ValueError:
        return f"{handle}: not a local run handle, not terminated"
    if host != socket.gethostname():
        return f"{handle}: runs on {host}, not here; not terminated"
    if pid == os.getpid():
        return f"{handle}: this process, not signalled"
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return f"{handle}: already ended"
    except PermissionError as exc:
        return f"{handle}: not terminated ({exc})"
    return f"{handle}: terminated (SIGTERM to pid {pid})"


class LocalLauncher(Launcher):
    """The pipeline with kfp.local's subprocess runner, in this environment."""

    name = "local"

    def __init__(
        self, settings: MonitoringSettings, progress: Callable[[str], None] | None = log.info
    ) -> None:
        super().__init__(settings)
        self.progress = progress  # one line per step; None: kfp.local prints everything

    def launch(
        self,
        spec: ProjectSpec,
        *,
        reason: str,
        source: str | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> Launched:
        from pipelines.runner import run_local

        handle = local_handle(spec)
        log.info("launching %s (%s)", handle, reason)
        if on_start:
            on_start(handle)
        try:
            result = run_local(spec, self.settings, source, progress=self.progress)
        except Exception as exc:  # noqa: BLE001 - any pipeline failure is the run's outcome
            return Launched(
                handle, finished=True, succeeded=False, detail=f"failed: {exc}", error=exc
            )
        return Launched(
            handle, finished=True, succeeded=True, version=result.version, detail=result.detail
        )

    def terminate(self, run_id: str) -> str:
        return terminate_local(run_id)


class KfpLauncher(Launcher):
    """A run of the compiled pipeline on a KFP API server."""

    name = "kfp"
    FINISHED = {"SUCCEEDED": True, "FAILED": False, "CANCELED": False, "SKIPPED": False}

    def __init__(self, settings: MonitoringSettings, run_name: str | None = None) -> None:
        super().__init__(settings)
        self.run_name = run_name  # default: <project>-retrain-<time>
        if not settings.kfp_host:
            raise LaunchError("the kfp launcher needs KUBELOOP_KFP_HOST (the KFP API server URL)")
        self._client = None

    def client(self):
        if self._client is None:
            import kfp

            token = self.settings.kfp_token.get_secret_value() if self.settings.kfp_token else None
            self._client = kfp.Client(host=self.settings.kfp_host, existing_token=token)
        return self._client

    def launch(
        self,
        spec: ProjectSpec,
        *,
        reason: str,
        source: str | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> Launched:
        from pipelines.runner import arguments, compile_pipeline

        name = self.run_name or run_name(spec)
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
        if on_start:
            on_start(result.run_id)
        return Launched(result.run_id, finished=False, detail=f"KFP run {name}")

    def wait(self, run_id: str, model_name: str, timeout: float) -> Launched:
        """Block until the run ends (or ``timeout`` seconds), then say how it ended: registered,
        rejected by the gate with the reasons, failed or terminated."""
        try:
            self.client().wait_for_run_completion(run_id, timeout=int(timeout))
        except TimeoutError:
            return Launched(run_id, finished=False, detail=f"still running after {timeout:.0f} s")
        seen = self.status(run_id, model_name)
        return seen or Launched(run_id, finished=False, detail="state unreadable")

    def terminate(self, run_id: str) -> str:
        try:
            self.client().terminate_run(run_id)
        except Exception as exc:  # noqa: BLE001 - reported; the newer run starts regardless
            return f"KFP run {run_id}: not terminated ({exc})"
        return f"KFP run {run_id}: terminated"

    def status(self, run_id: str, model_name: str) -> Launched | None:
        try:
            run = self.client().get_run(run_id)
        except Exception as exc:  # noqa: BLE001 - unknown: the run keeps its slot until timeout
            log.warning("cannot read KFP run %s: %s", run_id, exc)
            return None
        state = str(run.state or "").upper()
        if state not in self.FINISHED:
            return Launched(run_id, finished=False, detail=state.lower() or "pending")
        if state != "SUCCEEDED":
            return Launched(run_id, finished=True, succeeded=False, detail=state.lower())
        return self._outcome(run_id, model_name)

    def _outcome(self, run_id: str, model_name: str) -> Launched:
        """A succeeded run registered a version or was rejected by the gate: MLflow says which
        (the evaluate step tags the candidate's run with the KFP run id)."""
        from kubeloop import model_store
        from pipelines.runner import outcome_of_pipeline_run

        try:
            found = outcome_of_pipeline_run(
                model_store.configure(self.settings), model_name, run_id
            )
        except Exception as exc:  # noqa: BLE001 - the run did succeed; detail is a bonus
            found, unread = None, f"succeeded (outcome unread: {exc})"
        else:
            unread = "succeeded (no candidate found in MLflow)"
        if found is None:
            return Launched(run_id, finished=True, succeeded=True, detail=unread)
        return Launched(
            run_id, finished=True, succeeded=True, version=found.version, detail=found.detail
        )


LAUNCHERS: dict[str, type[Launcher]] = {cls.name: cls for cls in (LocalLauncher, KfpLauncher)}


def make_launcher(settings: MonitoringSettings) -> Launcher | None:
    """The configured launcher; None when launching is disabled (``KUBELOOP_LAUNCHER=none``)."""
    name = settings.launcher_name
    return None if name == "none" else LAUNCHERS[name](settings)
