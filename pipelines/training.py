"""The training pipeline: raw data -> versioned dataset -> Feast -> MLflow run -> gate -> registry.

Steps pass typed artifacts (Dataset, Model, Metrics), so the order follows the data. The spec
travels as a parameter: the same compiled pipeline serves every project.
"""

from kfp import dsl

from components.evaluate.component import evaluate
from components.features.component import features
from components.ingest.component import ingest
from components.register.component import register
from components.train.component import train

PIPELINE_NAME = "kubeloop-training"


@dsl.pipeline(name=PIPELINE_NAME, description="Train, evaluate and register a kubeloop model.")
def training_pipeline(spec: str, source: str = "") -> str:
    """Args:
    spec: The project spec as JSON (``kubeloop`` validates it before submitting).
    source: Overrides the spec's data source (a new data drop to retrain on).
    """
    ingested = ingest(spec=spec, source=source).set_display_name("ingest and validate")
    featured = features(spec=spec, dataset=ingested.outputs["dataset"]).set_display_name(
        "features to Feast"
    )
    trained = train(
        spec=spec,
        labels=featured.outputs["labels"],
        data_version=ingested.outputs["data_version"],
        dvc_pointer=ingested.outputs["dvc_pointer"],
        materialized=featured.outputs["Output"],
    ).set_display_name("train")
    evaluated = evaluate(
        spec=spec, model=trained.outputs["model"], test_set=trained.outputs["test_set"]
    ).set_display_name("evaluate gate")
    registered = register(
        spec=spec,
        model=trained.outputs["model"],
        decision=evaluated.outputs["decision"],
        data_version=ingested.outputs["data_version"],
    ).set_display_name("register")
    return registered.output
