"""Request and response shapes, for the OpenAPI docs and the low-traffic routes.

The hot routes (``/predict``, V2 ``infer``) do not validate through these models: they parse
with orjson and check in ``serving.inputs`` and ``serving.v2`` (a pydantic model per float
would cost more than the prediction). The models here document exactly what those accept.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordById(_Strict):
    """One thing to predict, by entity id: its features come from the Feast online store."""

    entity_id: int | str = Field(description="Entity id (the feature view's join key).")
    key: str | None = Field(
        None, description="Sticky routing key for canary traffic (default: the entity id)."
    )


class RecordByFeatures(_Strict):
    """One thing to predict, with its features: every model feature, nothing else."""

    features: dict[str, float] = Field(
        description="Every model feature by name (finite numbers; no extra names)."
    )
    key: str | None = Field(None, description="Sticky routing key for canary traffic.")


class PredictRequest(_Strict):
    records: list[RecordById | RecordByFeatures] = Field(
        min_length=1, description="The batch (see the size limit); each record one or the other."
    )


class PredictTable(_Strict):
    """The same request as a table: every model feature as a column, in any order."""

    columns: list[str] = Field(description="Feature names, each model feature once.")
    rows: list[list[float]] = Field(min_length=1, description="One list of values per row.")
    keys: list[str | int | None] | None = Field(None, description="Sticky canary key per row.")
    entity_ids: list[str | int | None] | None = Field(
        None, description="Entity id per row, or null (logged only; default canary key)."
    )


class PredictBody(RootModel[PredictRequest | PredictTable]):
    """Records (by entity id or features), or a table of features."""


class Prediction(BaseModel):
    request_id: str = Field(description="Id of this prediction; send ground truth with it.")
    prediction: float | int | str = Field(
        description="A regression model's value (a number); a classifier's label (its most "
        "probable class: a string, or an integer for integer classes)."
    )
    probabilities: dict[str, float] | None = Field(
        None,
        description="Classification only: the probability of every class, by class name "
        "(an integer class as its decimal string). Absent for regression.",
    )
    model_version: str = Field(description="V-name of the model that answered (V1.0.2).")


class PredictResponse(BaseModel):
    request_id: str = Field(description="Id of the request (X-Request-ID when given).")
    model: str = Field(description="Registered model name.")
    predictions: list[Prediction]


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. invalid_feature.")
    message: str = Field(description="What went wrong and what to do.")
    field: str | None = Field(None, description="The offending field, e.g. records[0].features.x")


class ErrorResponse(BaseModel):
    error: ErrorDetail


class V2ErrorResponse(BaseModel):
    """The Open Inference Protocol's error: ``error`` is the message; code and field beside it."""

    error: str = Field(description="What went wrong (the protocol's error message).")
    code: str = Field(description="Stable machine-readable code, e.g. not_found.")
    field: str | None = Field(None, description="The offending field, e.g. inputs[0].shape")


class FeedbackItem(_Strict):
    request_id: str = Field(
        min_length=1, max_length=64, description="A prediction's request_id (from /predict)."
    )
    actual: (
        Annotated[float, Field(strict=True, allow_inf_nan=False)]
        | Annotated[str, Field(strict=True, min_length=1, max_length=128)]
    ) = Field(
        description="The observed ground truth: a number for a regression model; the true "
        "class label for a classifier (a string, or an integer for integer classes), one of "
        "the classes the model predicts. Another type is refused with 422 naming the field."
    )


class FeedbackRequest(RootModel[FeedbackItem | Annotated[list[FeedbackItem], Field(min_length=1)]]):
    """One ground-truth item, or a list of them."""


class FeedbackResponse(BaseModel):
    stored: int


class FeaturesResponse(BaseModel):
    entity_id: int | str
    join_key: str
    event_timestamp: str | None
    features: dict[str, float | None]


class CanaryWeight(_Strict):
    weight: float = Field(
        strict=True, ge=0.0, le=1.0, description="Share of records for the candidate."
    )


class Health(BaseModel):
    status: str


class Status(BaseModel):
    ready: bool
    model: str
    champion: dict[str, Any] | None
    candidate: dict[str, Any] | None
    canary_weight: float
    shadow: bool
    features: dict[str, Any]
    prediction_log: dict[str, Any] | None
    errors: dict[str, str]
    last_registry_poll: float | None


class V2Tensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(
        description="FP64, FP32, INT64, ... (inputs: numeric datatypes only; the output "
        "'predict' of a classifier with string classes is BYTES)."
    )
    parameters: dict[str, Any] | None = Field(
        None,
        description="Output 'predict_proba' of a classifier: 'classes' names its columns.",
    )
    data: list[Any] | None = Field(None, description="Row-major values (absent with binary data).")


class V2RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class V2InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[V2Tensor]
    outputs: list[V2RequestedOutput] | None = None


class V2InferResponse(BaseModel):
    """Regression: one output ``predict`` (FP64, [N]). Classification: ``predict``, the labels
    ([N], BYTES for string classes, INT64 for integer ones), and ``predict_proba``, the class
    probabilities (FP64, [N, C], columns named by ``parameters.classes``), as MLServer's
    scikit-learn runtime names them; ``outputs`` in the request picks either."""

    model_name: str
    model_version: str | None = None
    id: str
    outputs: list[V2Tensor]


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


EXAMPLE_FEATURES = {
    "log_floor_area": 7.6,
    "building_age_years": 35.0,
    "is_office": 1.0,
    "is_retail": 0.0,
    "outdoor_temp_c": 11.5,
    "heating_degrees": 6.5,
    "cooling_degrees": 0.0,
    "humidity_pct": 70.0,
    "occupancy_density": 4.2,
    "hour_sin": 0.5,
    "hour_cos": -0.87,
    "is_weekend": 0.0,
}

PREDICT_EXAMPLES = {
    "by_entity": {
        "summary": "By entity id (features from the online store)",
        "value": {"records": [{"entity_id": 1001}, {"entity_id": 1002}]},
    },
    "by_features": {
        "summary": "Explicit features (every model feature)",
        "value": {"records": [{"features": EXAMPLE_FEATURES}]},
    },
    "sticky_key": {
        "summary": "With a sticky canary key",
        "value": {"records": [{"entity_id": 1001, "key": "customer-42"}]},
    },
    "table": {
        "summary": "A table of features (batch clients)",
        "value": {"columns": list(EXAMPLE_FEATURES), "rows": [list(EXAMPLE_FEATURES.values())] * 2},
    },
}

V2_EXAMPLES = {
    "matrix": {
        "summary": "One [N, F] tensor in model feature order",
        "value": {
            "inputs": [
                {
                    "name": "input-0",
                    "datatype": "FP64",
                    "shape": [1, 12],
                    "data": list(EXAMPLE_FEATURES.values()),
                }
            ]
        },
    },
}

FEEDBACK_EXAMPLES = {
    "one": {
        "summary": "Ground truth for one prediction",
        "value": {"request_id": "3f2a9c0d4b1e4e5f8a7b6c5d4e3f2a1b-0", "actual": 84.2},
    },
    "many": {
        "summary": "Several at once",
        "value": [
            {"request_id": "3f2a9c0d4b1e4e5f8a7b6c5d4e3f2a1b-0", "actual": 84.2},
            {"request_id": "3f2a9c0d4b1e4e5f8a7b6c5d4e3f2a1b-1", "actual": 91.0},
        ],
    },
}

DOC_MODELS: tuple[type[BaseModel], ...] = (PredictBody, V2InferRequest, FeedbackRequest)


def parse_feedback(payload: Any) -> list[FeedbackItem]:
    """Feedback items from a parsed body; errors name the field (``[1].actual``)."""
    from serving.errors import InvalidField

    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise InvalidField("feedback is an empty list: send at least one item", field=None)
    out = []
    for i, item in enumerate(items):
        try:
            out.append(FeedbackItem.model_validate(item))
        except ValidationError as exc:
            error = exc.errors()[0]
            # A union's errors carry the member tried (actual.float): the field is "actual".
            name = ".".join(str(p) for p in error["loc"] if p not in ("float", "str"))
            item_path = f"[{i}]" if isinstance(payload, list) else ""
            field = ".".join(p for p in (item_path, name) if p) or None
            message = error["msg"]
            if not name:  # the item itself is not an object
                message = 'must be an object {"request_id": ..., "actual": ...}'
            elif name == "actual" and error["type"] != "missing":
                message = (
                    "must be a finite number (regression) or a class label, a string or an "
                    "integer (classification)"
                )
            raise InvalidField(f"{field or 'feedback'}: {message}", field=field) from None
    return out
