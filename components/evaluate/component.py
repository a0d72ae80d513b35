"""kfp component of the evaluate step (interface only; the work is in ``core``)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kubeloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate(
    spec: str,
    model: Input[Model],
    test_set: Input[Dataset],
    pipeline_run: str,
    metrics: Output[Metrics],
    decision: Output[Artifact],
) -> NamedTuple("EvaluateOutputs", passed=bool, verdict=str):
    """Held-out metrics, thresholds and the champion comparison: the registry gate.

    Args:
        spec: The project spec.
        model: The candidate from the train step.
        test_set: Held-out rows.
        pipeline_run: The KFP run id, tagged on the candidate's MLflow run.
        metrics: Held-out metrics (shown in the KFP UI).
        decision: JSON with passed, reasons, metrics and the champion's metrics.

    Returns:
        passed: Whether the candidate may be registered (the register step's condition).
        verdict: JSON with passed, the reasons and the MLflow run: the pipeline's output.
    """
    from collections import namedtuple

    from components.evaluate.core import run_step
    from components.step import prepare

    project, settings = prepare(spec)
    run_id = model.metadata["mlflow_run_id"]
    result = run_step(
        project,
        settings,
        run_id,
        model.metadata["mlflow_model_uri"],
        test_set.path,
        decision.path,
        pipeline_run,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    decision.metadata.update({"passed": result.passed, "reasons": "; ".join(result.reasons)})
    outputs = namedtuple("EvaluateOutputs", ["passed", "verdict"])
    return outputs(result.passed, result.verdict(run_id))
