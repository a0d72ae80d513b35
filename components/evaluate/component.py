"""kfp component of the evaluate step (interface only; the work is in ``core``)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from kubeloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate(
    spec: str,
    model: Input[Model],
    test_set: Input[Dataset],
    metrics: Output[Metrics],
    decision: Output[Artifact],
) -> bool:
    """Held-out metrics, thresholds and the champion comparison: the registry gate.

    Args:
        spec: The project spec.
        model: The candidate from the train step.
        test_set: Held-out rows.
        metrics: Held-out metrics (shown in the KFP UI).
        decision: JSON with passed, reasons, metrics and the champion's metrics.

    Returns:
        Whether the candidate may be registered.
    """
    from components.evaluate.core import run_step
    from components.step import prepare

    project, settings = prepare(spec)
    result = run_step(
        project,
        settings,
        model.metadata["mlflow_run_id"],
        model.metadata["mlflow_model_uri"],
        test_set.path,
        decision.path,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    decision.metadata.update({"passed": result.passed, "reasons": "; ".join(result.reasons)})
    return result.passed
