"""kfp component of the register step (interface only; the work is in ``core``)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from kubeloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def register(spec: str, model: Input[Model], decision: Input[Artifact], data_version: str) -> str:
    """Register the candidate as V<tag>.<manual>.<auto> with alias challenger, if it passed.

    Args:
        spec: The project spec.
        model: The candidate from the train step.
        decision: The evaluation decision; a failed gate registers nothing.
        data_version: DVC md5 of the training data, tagged on the version.

    Returns:
        The new version's name, or an empty string when the gate failed.
    """
    from components.register.core import run_step
    from components.step import prepare

    project, settings = prepare(spec)
    return run_step(
        project,
        settings,
        decision.path,
        model.metadata["mlflow_run_id"],
        model.metadata["mlflow_model_uri"],
        data_version,
    )
