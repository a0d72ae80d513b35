"""The server's OpenAPI document: FastAPI's, plus what FastAPI cannot see.

The hot routes (``serving.inference``) and ``/feedback`` parse their bodies without pydantic, so
their request schemas are added here, and the hot routes' operations are written here: they
are plain ASGI, documented without a second implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from serving import schemas
from serving.responses import JSON
from serving.routes import ERRORS, V2_ERRORS, admin_router, body_doc, predict_router

BEARER: dict[str, Any] = {"security": [{"bearer": []}]}
ADMIN: dict[str, Any] = {"security": [{"admin": []}]}
DOCUMENTED_MODELS: tuple[type[BaseModel], ...] = (
    *schemas.DOC_MODELS,
    schemas.PredictResponse,
    schemas.V2InferResponse,
    schemas.ErrorResponse,
    schemas.V2ErrorResponse,
)


def _ref(model: type) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _responses(answer: type, errors: dict[int | str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "Successful Response", "content": {JSON: {"schema": _ref(answer)}}}
    }
    for status, doc in errors.items():
        out[str(status)] = {
            "description": doc["description"],
            "content": {JSON: {"schema": _ref(doc["model"])}},
        }
    return out


def _path_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "title": name.title()},
    }


def hot_operations() -> dict[str, dict[str, Any]]:
    """The OpenAPI path items of ``POST /predict`` and V2 infer."""
    name = _path_parameter("name", "Registered model name")
    version = _path_parameter("version", "Registry version number or V-name")
    infer_body = body_doc("V2InferRequest", schemas.V2_EXAMPLES)
    return {
        "/predict": {
            "post": {
                "tags": ["predict"],
                "summary": "Predict",
                "operationId": "predict",
                "description": "Predict a batch of records, each by entity id (online "
                "features) or explicit features. A regression model answers a number per "
                "record; a classifier its label and the probability of every class.",
                **body_doc("PredictBody", schemas.PREDICT_EXAMPLES),
                "responses": _responses(schemas.PredictResponse, ERRORS),
                **BEARER,
            }
        },
        "/v2/models/{name}/infer": {
            "post": {
                "tags": ["open inference protocol (v2)"],
                "summary": "V2 Infer",
                "operationId": "v2_infer",
                "description": "Inference (JSON or binary tensors); routed, logged and batched "
                "like /predict. Output 'predict' (a regressor's values, a classifier's labels) "
                "and, for a classifier, 'predict_proba' ([N, C], parameters.classes).",
                "parameters": [name],
                **infer_body,
                "responses": _responses(schemas.V2InferResponse, V2_ERRORS),
                **BEARER,
            }
        },
        "/v2/models/{name}/versions/{version}/infer": {
            "post": {
                "tags": ["open inference protocol (v2)"],
                "summary": "V2 Infer Version",
                "operationId": "v2_infer_version",
                "description": "Inference pinned to a loaded version (the champion, or the "
                "candidate).",
                "parameters": [name, version],
                **infer_body,
                "responses": _responses(schemas.V2InferResponse, V2_ERRORS),
                **BEARER,
            }
        },
    }


def document_entity_ids(spec: dict[str, Any], value_type: str) -> None:
    """Entity ids that read the online store, as the join key's type: integers within its
    range for INT64 and INT32 keys, else short strings (a table's ``entity_ids`` are only
    logged: any id goes).

    The request models say ``int | str`` because one server build serves any feature view; the
    document a client reads should say exactly what this server accepts.
    """
    bits = {"INT64": 63, "INT32": 31}.get(value_type)
    text = {"type": "string", "minLength": 1, "maxLength": 256}
    entity: dict[str, Any] = (
        text if bits is None else {"type": "integer", "minimum": -(2**bits), "maximum": 2**bits - 1}
    )
    schemas_ = spec["components"]["schemas"]
    schemas_["RecordById"]["properties"]["entity_id"] = {
        **entity,
        "description": "Entity id (the feature view's join key).",
    }
    path = spec["paths"]["/features/{entity_id}"]["get"]
    for parameter in path["parameters"]:
        if parameter["name"] == "entity_id":
            parameter["schema"] = (
                text
                if bits is None
                else {
                    "type": "string",
                    "pattern": "^-?[0-9]{1,19}$",
                    "description": f"An integer from {-(2**bits)} to {2**bits - 1}.",
                }
            )


def document_feedback(spec: dict[str, Any], classes: list[Any] | None) -> None:
    """``actual`` as this server takes it: a number for a regression model, one of the model's
    classes for a classifier (integer classes also as their decimal strings), with examples
    to match. The request model says "number or string" because one build serves either task;
    the document a client reads says which."""
    item = spec["components"]["schemas"]["FeedbackItem"]["properties"]
    description = item["actual"].get("description", "")
    body = spec["paths"]["/feedback"]["post"]["requestBody"]["content"][JSON]
    if classes is None:
        item["actual"] = {"type": "number", "description": description}
        return
    allowed = list(classes) + [str(c) for c in classes if not isinstance(c, str)]
    item["actual"] = {"enum": allowed, "description": description}
    rid = "3f2a9c0d4b1e4e5f8a7b6c5d4e3f2a1b"
    body["examples"] = {
        "one": {
            "summary": "The true class of one prediction",
            "value": {"request_id": f"{rid}-0", "actual": classes[0]},
        },
        "many": {
            "summary": "Several at once",
            "value": [{"request_id": f"{rid}-{i}", "actual": c} for i, c in enumerate(classes[:2])],
        },
    }


def openapi_builder(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: built once, then cached on the app until the champion's classes change
    (a new champion of a classifier may know other classes, and feedback must name one)."""

    def build() -> dict[str, Any]:
        runtime = getattr(app.state, "runtime", None)
        champion = runtime.models.state.champion if runtime is not None else None
        classify = getattr(runtime, "task", "regression") == "classification"
        classes = champion.classes.tolist() if classify and champion is not None else None
        if app.openapi_schema and getattr(app.state, "openapi_classes", None) == classes:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in DOCUMENTED_MODELS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        spec["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "KUBELOOP_API_TOKEN (required when the server has one)",
            },
            "admin": {
                "type": "http",
                "scheme": "bearer",
                "description": "KUBELOOP_ADMIN_TOKEN (the predict token is refused)",
            },
        }
        paths = spec.setdefault("paths", {})
        for router, security in ((predict_router, BEARER), (admin_router, ADMIN)):
            for route in router.routes:
                for method in getattr(route, "methods", ()):
                    operation = paths.get(getattr(route, "path", ""), {}).get(method.lower())
                    if operation is not None:
                        operation.update(security)
        paths.update(hot_operations())
        features = getattr(runtime, "features", None)
        layout = features.layout if features is not None else None
        if layout is None or (classify and champion is None):
            # not cached: documented again once the feature store is open (and a classifier's
            # classes are known)
            return spec
        document_entity_ids(spec, getattr(layout.value_type, "name", str(layout.value_type)))
        document_feedback(spec, classes)
        app.openapi_schema = spec
        app.state.openapi_classes = classes
        return spec

    return build
