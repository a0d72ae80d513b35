"""kfp component of the train step (interface only; the work is in ``core``)."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from kubeloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def train(
    spec: str,
    labels: Input[Dataset],
    data_version: str,
    dvc_pointer: str,
    materialized: str,
    model: Output[Model],
    test_set: Output[Dataset],
) -> NamedTuple("TrainOutputs", run_id=str, model_uri=str):
    """Fit the spec's estimator on a point-in-time Feast training set; track it in MLflow.

    Args:
        spec: The project spec.
        labels: Entity dataframe (entity, event time, target) from the features step.
        data_version: DVC md5 of the dataset, logged with the run.
        dvc_pointer: The dataset's ``.dvc`` file, logged with the run.
        materialized: The Feast materialization window, logged with the run.
        model: Points at the MLflow model (metadata ``mlflow_model_uri``).
        test_set: The held-out rows, for evaluation.

    Returns:
        run_id: The MLflow run.
        model_uri: The logged model's URI.
    """
    from collections import namedtuple

    from components.step import prepare
    from components.train.core import run_step

    project, settings = prepare(spec)
    data = {"md5": data_version, "pointer": dvc_pointer, "materialized": materialized}
    result = run_step(project, settings, labels.path, data, test_set.path)
    model.metadata.update(
        {
            "mlflow_run_id": result.run_id,
            "mlflow_model_uri": result.model_uri,
            "features": ",".join(result.features),
        }
    )
    with open(model.path, "w") as fh:
        fh.write(result.model_uri)
    outputs = namedtuple("TrainOutputs", ["run_id", "model_uri"])
    return outputs(result.run_id, result.model_uri)
