"""Run the training pipeline locally (kfp.local), compile it, or submit it to a KFP server."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeloop.errors import KubeloopError
from kubeloop.settings import PlatformSettings
from kubeloop.spec import ProjectSpec, dump_spec
from pipelines.containers import docker_runner, exit_status_kept, removed_on_sigterm
from pipelines.local_conditions import conditions_evaluated
from pipelines.progress import StepLog

EXPERIMENT = "kubeloop"


@dataclass(frozen=True)
class LocalRun:
    version: str  # V-name of the registered version, '' when the gate rejected the model
    log: Path | None = None  # kfp.local's full output, when it went to a file
    reasons: tuple[str, ...] = ()  # why the gate rejected the model
    mlflow_run_id: str = ""

    @property
    def registered(self) -> bool:
        return bool(self.version)

    @property
    def detail(self) -> str:
        """One line for launchers and the CLI: what the run registered, or why nothing."""
        if self.registered:
            return f"registered {self.version}"
        return "rejected by the evaluation gate: " + ("; ".join(self.reasons) or "no reason given")


def outcome(client, model_name: str, verdict: dict[str, Any]) -> LocalRun:
    """What a finished run did, from its verdict (the pipeline's output): the version registered
    from its MLflow run, or the gate's reasons. The register step runs only when the gate passed,
    so the version is looked up in the registry rather than passed out of a conditional branch
    (kfp.local cannot return a ``dsl.OneOf``)."""
    from kubeloop import registry

    run_id = str(verdict.get("mlflow_run_id") or "")
    if not verdict.get("passed"):
        return LocalRun(
            version="", reasons=tuple(verdict.get("reasons") or ()), mlflow_run_id=run_id
        )
    version = registry.version_of_run(client, model_name, run_id)
    if version is None:  # the register step did not run although the gate passed
        raise PipelineFailed(
            f"the evaluation gate passed but no version of {model_name} was registered from "
            f"MLflow run {run_id}: the register step did not run"
        )
    return LocalRun(version=version.tags[registry.TAG_NAME], mlflow_run_id=run_id)


def outcome_of_pipeline_run(client, model_name: str, pipeline_run: str) -> LocalRun | None:
    """The outcome of a KFP run, read from the MLflow run its evaluate step tagged with the KFP
    run id; None when no candidate got that far (the run failed or was terminated earlier)."""
    import mlflow

    from kubeloop.registry import GATE_REASONS_TAG, GATE_TAG, PIPELINE_RUN_TAG

    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{pipeline_run}'",
        output_format="list",
    )
    if not runs:
        return None
    tags = runs[0].data.tags
    reasons = [r for r in tags.get(GATE_REASONS_TAG, "").split("; ") if r]
    verdict = {"passed": tags.get(GATE_TAG) == "passed", "reasons": reasons}
    return outcome(client, model_name, {**verdict, "mlflow_run_id": runs[0].info.run_id})


def arguments(spec: ProjectSpec, source: str | None = None) -> dict[str, Any]:
    return {"spec": json.dumps(dump_spec(spec)), "source": source or ""}


def run_local(
    spec: ProjectSpec,
    settings: PlatformSettings,
    source: str | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> LocalRun:
    """Run the pipeline with kfp.local: child processes of this environment (no Docker), or
    with ``KUBELOOP_LOCAL_RUNNER=docker`` one container per step (``pipelines.containers``).

    The steps run in child processes, so the settings travel as environment variables. With
    ``progress``, kfp.local's output goes to a log file under the work folder and ``progress``
    gets one line per step start and end; without it, everything is printed (notebooks).
    """
    from kfp import local

    from pipelines.training import training_pipeline_for

    settings.export_to_environment()
    root = settings.work_dir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    runner = (
        docker_runner(settings, root)
        if settings.local_runner == "docker"
        else local.SubprocessRunner(use_venv=False)
    )
    local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    steps = (
        StepLog(settings.work_dir / "logs" / f"training-{stamp}.log", progress)
        if progress
        else None
    )
    with warnings.catch_warnings(), contextlib.ExitStack() as stack:
        # The steps use kubeloop's own image on a cluster; here they run in this environment.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        stack.enter_context(conditions_evaluated())  # the register step's dsl.If
        if settings.local_runner == "docker":
            stack.enter_context(exit_status_kept())  # a failed step's container reads as failed
            stack.enter_context(removed_on_sigterm())  # a superseded run's too
        if steps is not None:
            stack.enter_context(contextlib.closing(steps))
            stack.enter_context(contextlib.redirect_stdout(steps))
        try:
            pipeline = training_pipeline_for(settings.pipeline_image)
            task = pipeline(**arguments(spec, source))
        except RuntimeError as exc:
            raise PipelineFailed(_failure_message(str(exc), spec, settings, steps)) from None
    from kubeloop import model_store

    result = outcome(model_store.configure(settings), spec.model_name, json.loads(task.output))
    return dataclasses.replace(result, log=steps.path if steps else None)


class PipelineFailed(KubeloopError):
    """A pipeline step failed; its log is above, its report (if any) on disk."""


def _failure_message(
    raw: str, spec: ProjectSpec, settings: PlatformSettings, steps: StepLog | None
) -> str:
    from components.ingest.core import report_path

    text = re.sub(r"\x1b\[[0-9;]*m", "", raw)
    found = re.search(r"Inner task failed: '([^']+)'", text)
    step = steps.failed_step if steps and steps.failed_step else found.group(1) if found else "?"
    message = f"the training pipeline failed at step '{step}'"
    report = report_path(settings, spec)
    if step == "ingest" and report.exists():
        message += f"; data-quality report: {report}"
    if steps is None:
        return message + " (the step's log is above)"
    return f"{message}; full log: {steps.path}\n{steps.failure or 'the step gave no message'}"


def compile_pipeline(path: str | Path, image: str | None = None) -> Path:
    """Write the pipeline's KFP IR YAML, every step in ``image`` (default: the settings')."""
    from kfp import compiler

    from pipelines.training import training_pipeline_for

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = training_pipeline_for(image or PlatformSettings().pipeline_image)
    compiler.Compiler().compile(pipeline, package_path=str(path))
    return path


def submit(
    host: str,
    spec: ProjectSpec,
    source: str | None = None,
    *,
    run_name: str | None = None,
    experiment: str = EXPERIMENT,
    existing_token: str | None = None,
) -> str:
    """Submit the pipeline to a KFP API server, every step in the settings' image; returns the
    run id."""
    import kfp

    from pipelines.training import training_pipeline_for

    client = kfp.Client(host=host, existing_token=existing_token)
    result = client.create_run_from_pipeline_func(
        training_pipeline_for(PlatformSettings().pipeline_image),
        arguments=arguments(spec, source),
        run_name=run_name or f"{spec.name}-training",
        experiment_name=experiment,
    )
    return result.run_id
