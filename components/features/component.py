"""kfp component of the features step (interface only; the work is in ``core``)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kubeloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def features(spec: str, dataset: Input[Dataset], labels: Output[Dataset]) -> str:
    """Engineer features, write the offline source, apply the Feast repo, materialize online.

    Args:
        spec: The project spec.
        dataset: The versioned raw dataset from ingest.
        labels: Entity, event time and target: the entity dataframe for training.

    Returns:
        The materialized window, as ISO timestamps ``start/end``.
    """
    from components.features.core import run_step
    from components.step import prepare

    project, settings = prepare(spec)
    result = run_step(project, settings, dataset.path, labels.path)
    labels.metadata.update(
        {
            "rows": result.rows,
            "entities": result.entities,
            "feature_views": ",".join(result.feature_views),
        }
    )
    return f"{result.materialized_from.isoformat()}/{result.materialized_to.isoformat()}"
