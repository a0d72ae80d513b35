"""The FastAPI routes but the hot ones: thin translations to ``serving.service.Runtime``.

The hot routes (predict, V2 infer) are ``serving.inference.HotRoutes``; ``include_routes``
mounts them on the router too, so they serve the same way when the middleware's fast path is
off.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.responses import Response
from starlette.routing import Route

from kubeloop.images import VERSION
from serving import schemas
from serving.auth import ADMIN_GUARD, PREDICT_GUARD
from serving.errors import PayloadTooLarge
from serving.inference import PATHS, HotRoutes
from serving.inputs import loads
from serving.metrics import CONTENT_TYPE
from serving.responses import JSON
from serving.service import Runtime

ERROR_STATUSES = {
    400: "Body is not JSON or not shaped as documented",
    401: "Missing or wrong bearer token",
    404: "Unknown entity id or model name",
    413: "Too many records or body too large",
    422: "A feature or field is missing, unknown, of the wrong type, NaN or infinite",
    503: "No model loaded yet, or a backing store is unavailable",
}


def error_docs(model: type) -> dict[int | str, dict[str, Any]]:
    """The documented error responses, each with the body ``model`` it has."""
    return {
        status: {"model": model, "description": text} for status, text in ERROR_STATUSES.items()
    }


ERRORS = error_docs(schemas.ErrorResponse)
V2_ERRORS = error_docs(schemas.V2ErrorResponse)  # the Open Inference Protocol's error shape


FORBIDDEN = "The predict token on an admin route, or a server without an admin token"


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def body_doc(model: str, examples: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI ``requestBody`` for a route that parses its body itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": f"#/components/schemas/{model}"}, "examples": examples}
            },
        }
    }


predict_router = APIRouter(tags=["predict"], dependencies=PREDICT_GUARD, responses=ERRORS)


@predict_router.get("/features/{entity_id}", response_model=schemas.FeaturesResponse)
async def features(
    entity_id: Annotated[str, Path(max_length=256)], runtime: RuntimeDep
) -> dict[str, Any]:
    """The online features of one entity, as the model would receive them."""
    return await runtime.features_of(entity_id)


@predict_router.post(
    "/feedback",
    response_model=schemas.FeedbackResponse,
    openapi_extra=body_doc("FeedbackRequest", schemas.FEEDBACK_EXAMPLES),
)
async def feedback(request: Request, runtime: RuntimeDep) -> dict[str, int]:
    """Ground truth for one prediction (or a list), by its request_id."""
    payload = loads(await request.body())
    batch = schemas.parse_feedback(payload)
    if len(batch) > runtime.settings.max_batch_records:
        raise PayloadTooLarge(
            f"{len(batch)} feedback items; the limit is {runtime.settings.max_batch_records}"
        )
    items = [(i.request_id, i.actual) for i in batch]
    return {"stored": await runtime.feedback(items, many=isinstance(payload, list))}


health_router = APIRouter(prefix="/health", tags=["health"])


# HEAD too (load balancers and uptime checkers probe with it), out of the OpenAPI document.
@health_router.head("/live", include_in_schema=False)
@health_router.get("/live", response_model=schemas.Health)
async def live() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "live"}


@health_router.head("/ready", include_in_schema=False)
@health_router.get("/ready", response_model=schemas.Status, responses={503: ERRORS[503]})
async def ready(runtime: RuntimeDep) -> dict[str, Any]:
    """Readiness: 200 once a champion is loaded, with what serves; 503 before."""
    runtime.ready_state()
    return runtime.status()


metrics_router = APIRouter(tags=["metrics"])


@metrics_router.get(
    "/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}}}
)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics (all workers aggregated in multiprocess mode)."""
    return Response(runtime.metrics_body(), media_type=CONTENT_TYPE)


v2_router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], responses=V2_ERRORS)
ModelName = Annotated[str, Path(description="Registered model name")]
ModelVersion = Annotated[str, Path(description="Registry version number or V-name")]


@v2_router.get("", response_model=schemas.V2ServerMetadata)
async def v2_server() -> dict[str, Any]:
    """Server metadata."""
    return {"name": "kubeloop", "version": VERSION, "extensions": ["binary_tensor_data"]}


@v2_router.get("/health/live")
async def v2_live() -> dict[str, bool]:
    """Server liveness."""
    return {"live": True}


@v2_router.get("/health/ready")
async def v2_ready(runtime: RuntimeDep) -> dict[str, bool]:
    """Server readiness (503 until a model is loaded)."""
    runtime.ready_state()
    return {"ready": True}


@v2_router.get("/models/{name}", response_model=schemas.V2ModelMetadata)
async def v2_model(name: ModelName, runtime: RuntimeDep) -> dict[str, Any]:
    """Model metadata: versions, input tensor (features in order) and output tensor."""
    return runtime.v2_metadata(name)


@v2_router.get("/models/{name}/versions/{version}", response_model=schemas.V2ModelMetadata)
async def v2_model_version(
    name: ModelName, version: ModelVersion, runtime: RuntimeDep
) -> dict[str, Any]:
    """Metadata of one loaded version."""
    return runtime.v2_metadata(name, version)


@v2_router.get("/models/{name}/ready")
async def v2_model_ready(name: ModelName, runtime: RuntimeDep) -> dict[str, Any]:
    """Model readiness (503 until loaded)."""
    runtime.check_model_name(name)
    return {"name": name, "ready": True}


@v2_router.get("/models/{name}/versions/{version}/ready")
async def v2_model_version_ready(
    name: ModelName, version: ModelVersion, runtime: RuntimeDep
) -> dict[str, Any]:
    """Readiness of one loaded version."""
    runtime.check_model_name(name, version)
    return {"name": name, "ready": True}


admin_router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=ADMIN_GUARD,
    responses={**ERRORS, 403: {"model": schemas.ErrorResponse, "description": FORBIDDEN}},
)


@admin_router.get("/rollout", response_model=schemas.Status)
async def rollout(runtime: RuntimeDep) -> dict[str, Any]:
    """What serves: champion, candidate, canary weight, shadow, last errors."""
    return runtime.status()


@admin_router.put("/canary", response_model=schemas.Status)
async def set_canary(body: schemas.CanaryWeight, runtime: RuntimeDep) -> dict[str, Any]:
    """Set the canary weight for the current candidate (stored in the registry)."""
    return await runtime.set_canary_weight(body.weight)


@admin_router.post("/rollback", response_model=schemas.Status)
async def rollback(runtime: RuntimeDep) -> dict[str, Any]:
    """Roll back the canary: weight 0, every record answered by the champion."""
    return await runtime.set_canary_weight(0.0)


@admin_router.post("/reload", response_model=schemas.Status)
async def reload(runtime: RuntimeDep) -> dict[str, Any]:
    """Check the registry now instead of at the next poll."""
    return await runtime.reload()


ROUTERS = (predict_router, health_router, metrics_router, v2_router, admin_router)


def include_routes(app: FastAPI) -> None:
    hot = HotRoutes()
    for path in PATHS:
        app.router.routes.append(Route(path, hot, methods=["POST"], include_in_schema=False))
    for router in ROUTERS:
        app.include_router(router)
