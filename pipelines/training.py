"""The training pipeline: raw data -> versioned dataset -> Feast -> MLflow run -> gate -> registry.

Steps pass typed artifacts (Dataset, Model, Metrics), so the order follows the data. The spec
travels as a parameter: the same compiled pipeline serves every project.
"""

from kfp import dsl, kubernetes
from kfp.dsl import PipelineTask
from kfp.dsl.graph_component import GraphComponent

from components.evaluate.component import evaluate
from components.features.component import features
from components.ingest.component import ingest
from components.register.component import register
from components.train.component import train
from kubeloop.images import (
    PIPELINE_ENV_CONFIGMAP,
    PIPELINE_ENV_KEYS,
    PIPELINE_IMAGE,
    PIPELINE_SECRET,
    PIPELINE_SECRET_KEYS,
)

PIPELINE_NAME = "kubeloop-training"


def on_platform(task: PipelineTask, name: str, image: str) -> PipelineTask:
    """Name the step, run it in ``image`` and give it the platform settings from the chart's
    ConfigMap and Secret (secrets never travel as pipeline parameters). kfp.local's subprocess
    runner ignores all but the name and inherits the caller's environment instead."""
    task.set_display_name(name)
    task.set_container_image(image)
    kubernetes.use_config_map_as_env(
        task, PIPELINE_ENV_CONFIGMAP, {k: k for k in PIPELINE_ENV_KEYS}, optional=True
    )
    kubernetes.use_secret_as_env(
        task, PIPELINE_SECRET, {k: k for k in PIPELINE_SECRET_KEYS}, optional=True
    )
    return task


def training_pipeline_for(image: str) -> GraphComponent:
    """The pipeline with every step in ``image`` (``PlatformSettings.pipeline_image``)."""

    @dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate and register a kubeloop model.")
    def training_pipeline(spec: str, source: str = "") -> str:
        """Train, evaluate and register one project's model; the output is the gate's verdict
        (JSON: passed, reasons, MLflow run).

        Args:
            spec: The project spec as JSON (``kubeloop`` validates it before submitting).
            source: Overrides the spec's data source (a new data drop to retrain on).
        """
        ingested = on_platform(ingest(spec=spec, source=source), "ingest and validate", image)
        featured = on_platform(
            features(spec=spec, dataset=ingested.outputs["dataset"]), "features to Feast", image
        )
        trained = on_platform(
            train(
                spec=spec,
                labels=featured.outputs["labels"],
                data_version=ingested.outputs["data_version"],
                dvc_pointer=ingested.outputs["dvc_pointer"],
                materialized=featured.outputs["Output"],
            ),
            "train",
            image,
        )
        evaluated = on_platform(
            evaluate(
                spec=spec,
                model=trained.outputs["model"],
                test_set=trained.outputs["test_set"],
                pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            ),
            "evaluate gate",
            image,
        )
        # A rejected candidate skips the register step: the run reads as rejected on KFP, and
        # its output (the verdict) says why.
        with dsl.If(evaluated.outputs["passed"] == True, name="gate-passed"):  # noqa: E712
            on_platform(
                register(
                    spec=spec,
                    model=trained.outputs["model"],
                    decision=evaluated.outputs["decision"],
                    data_version=ingested.outputs["data_version"],
                ),
                "register",
                image,
            )
        return evaluated.outputs["verdict"]

    return training_pipeline


# With the default image: the golden IR (pipelines/training.yaml) and `kubeloop compile`.
training_pipeline = training_pipeline_for(PIPELINE_IMAGE)
