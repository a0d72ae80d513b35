"""The FastAPI application: thin routes over ``serving.service.Runtime``.

``create_app(settings)`` builds one app (tests pass their own ``Runtime``); ``app_from_env`` is
the factory each uvicorn worker calls (``python -m serving`` starts them).

Every error leaves as ``{"error": {"code", "message", "field"}}`` with its status. The bearer
token (``KUBELOOP_API_TOKEN``) guards predict, V2 infer, features, feedback and admin routes;
health, metrics, V2 metadata and the docs stay open for probes, Prometheus and clients.
"""

from __future__ import annotations

import hmac
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from kubeloop.errors import KubeloopError
from kubeloop.images import VERSION
from serving import schemas
from serving.errors import (
    PayloadTooLarge,
    ServingError,
    Unauthorized,
    error_body,
    field_path,
)
from serving.inputs import loads
from serving.metrics import CONTENT_TYPE
from serving.service import Answer, Runtime
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

JSON = "application/json"
ANSWER_KEY = "kubeloop.answer"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,48}$")


def _error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    path: str = "",
) -> Response:
    """The error shape; on the Open Inference Protocol routes (``/v2``) ``error`` is the message
    string the protocol defines (KServe and Triton clients print it), with ``code`` and
    ``field`` beside it."""
    if path.startswith("/v2"):
        body = orjson.dumps({"error": message, "code": code, "field": field})
    else:
        body = error_body(code, message, field)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": schemas.ErrorResponse, "description": text}
    for status, text in {
        400: "Body is not JSON or not shaped as documented",
        401: "Missing or wrong bearer token",
        404: "Unknown entity id or model name",
        413: "Too many records or body too large",
        422: "A feature or field is missing, unknown, of the wrong type, NaN or infinite",
        503: "No model loaded yet, or a backing store is unavailable",
    }.items()
}


# -- dependencies ------------------------------------------------------------------------------
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def check_token(scope: dict[str, Any]) -> None:
    """Constant-time check of ``Authorization: Bearer <KUBELOOP_API_TOKEN>``."""
    expected: bytes | None = scope["app"].state.token
    if expected is None:
        return
    for name, value in scope["headers"]:
        if name == b"authorization":
            if hmac.compare_digest(value, expected):
                return
            break
    raise Unauthorized("missing or wrong bearer token: send 'Authorization: Bearer <token>'")


async def require_token(request: Request) -> None:
    """The token check as a dependency (every guarded route but the two hot ones)."""
    check_token(request.scope)


Guarded = [Depends(require_token)]
BEARER = {"security": [{"bearer": []}]}


def hot(scope: dict[str, Any]) -> Runtime:
    """What the hot routes (predict, V2 infer) take instead of dependencies: the token check
    and the runtime, inline (see ``HotRoutes``)."""
    check_token(scope)
    return scope["app"].state.runtime


def request_id(scope: dict[str, Any]) -> str:
    """The caller's ``X-Request-ID`` when it is a sane id, else a fresh one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID.match(candidate):
                return candidate
            break
    return uuid.uuid4().hex


def _answer(request: Request, answer: Answer, request_id_value: str) -> Response:
    request.scope[ANSWER_KEY] = (answer.model_version, answer.role)
    headers = {"X-Request-ID": request_id_value}
    if answer.headers:
        headers.update(answer.headers)
    return Response(answer.body, media_type=JSON, headers=headers)


def _body_doc(model: str, examples: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": {"$ref": f"#/components/schemas/{model}"}, "examples": examples}
            },
        }
    }


# -- routes ------------------------------------------------------------------------------------
hot_router = APIRouter(tags=["predict"], responses=ERRORS)
predict_router = APIRouter(tags=["predict"], dependencies=Guarded, responses=ERRORS)


@hot_router.post(
    "/predict",
    response_model=schemas.PredictResponse,
    openapi_extra={**_body_doc("PredictBody", schemas.PREDICT_EXAMPLES), **BEARER},
)
async def predict(request: Request) -> Response:
    """Predict a batch of records, each by entity id (online features) or explicit features."""
    runtime = hot(request.scope)
    rid = request_id(request.scope)
    return _answer(request, await runtime.predict(await request.body(), rid), rid)


@predict_router.get("/features/{entity_id}", response_model=schemas.FeaturesResponse)
async def features(
    entity_id: Annotated[str, Path(max_length=256)], runtime: RuntimeDep
) -> dict[str, Any]:
    """The online features of one entity, as the model would receive them."""
    return await runtime.features_of(entity_id)


@predict_router.post(
    "/feedback",
    response_model=schemas.FeedbackResponse,
    openapi_extra=_body_doc("FeedbackRequest", schemas.FEEDBACK_EXAMPLES),
)
async def feedback(request: Request, runtime: RuntimeDep) -> dict[str, int]:
    """Ground truth for one prediction (or a list), by its request_id."""
    batch = schemas.parse_feedback(loads(await request.body()))
    if len(batch) > runtime.settings.max_batch_records:
        raise PayloadTooLarge(
            f"{len(batch)} feedback items; the limit is {runtime.settings.max_batch_records}"
        )
    return {"stored": await runtime.feedback([(i.request_id, i.actual) for i in batch])}


health_router = APIRouter(prefix="/health", tags=["health"])


@health_router.get("/live", response_model=schemas.Health)
async def live() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "live"}


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


v2_router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"], responses=ERRORS)
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


@v2_router.post(
    "/models/{name}/infer",
    response_model=schemas.V2InferResponse,
    openapi_extra={**_body_doc("V2InferRequest", schemas.V2_EXAMPLES), **BEARER},
)
async def v2_infer(name: ModelName, request: Request) -> Response:
    """Inference (JSON or binary tensors); routed, logged and batched like /predict."""
    runtime = hot(request.scope)
    rid = request_id(request.scope)
    answer = await runtime.infer(
        name, await request.body(), request.headers.get("inference-header-content-length"), rid
    )
    return _answer(request, answer, rid)


@v2_router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=schemas.V2InferResponse,
    openapi_extra={**_body_doc("V2InferRequest", schemas.V2_EXAMPLES), **BEARER},
)
async def v2_infer_version(name: ModelName, version: ModelVersion, request: Request) -> Response:
    """Inference pinned to a loaded version (the champion, or the candidate)."""
    runtime = hot(request.scope)
    rid = request_id(request.scope)
    answer = await runtime.infer(
        name,
        await request.body(),
        request.headers.get("inference-header-content-length"),
        rid,
        version=version,
    )
    return _answer(request, answer, rid)


admin_router = APIRouter(prefix="/admin", tags=["admin"], dependencies=Guarded, responses=ERRORS)


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


# -- middleware and error handlers -------------------------------------------------------------
class ServingMiddleware:
    """Request metrics (route template, status, model version, role, latency), the body size
    limit and the hot routes' fast path, as plain ASGI (no per-request task or buffering).

    The fast path serves ``POST /predict`` and ``POST /v2/models/{name}[/versions/{v}]/infer``
    directly: same token check, same ``Runtime`` call, same error shape as the FastAPI routes
    (which stay registered: they document the routes in OpenAPI and serve them when
    ``KUBELOOP_ASGI_FAST_PATH=false``). FastAPI's routing, request objects and response
    classes took more CPU than a whole 1-row prediction; without them the server answers
    1.6-2x the 1-row requests per second.
    """

    def __init__(self, app: Any, max_body_bytes: int, fast_path: bool = True):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.fast_path = fast_path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.max_body_bytes
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
                break
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = False
            if too_big:
                await _error_response(
                    413,
                    PayloadTooLarge.code,
                    f"body of {int(length)} bytes; the limit is {limit}: split the batch",
                    path=scope["path"],
                )(scope, receive, send)
                self._observe(scope, 413, started)
                return
        elif scope["method"] in ("POST", "PUT", "PATCH"):
            receive = _limited(receive, limit)
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = _in_flight_gauge(scope)
        if in_flight is not None:
            in_flight.inc()
        try:
            if not (
                self.fast_path
                and scope["method"] == "POST"
                and await _hot_route(scope, receive, send_status)
            ):
                await self.app(scope, receive, send_status)
        finally:
            if in_flight is not None:
                in_flight.dec()
            self._observe(scope, status, started)

    @staticmethod
    def _observe(scope: dict[str, Any], status: int, started: float) -> None:
        runtime = scope["app"].state.runtime if "app" in scope else None
        if runtime is None:
            return
        route = scope.get("route")
        version, role = scope.get(ANSWER_KEY, ("", ""))
        runtime.metrics.observe_request(
            getattr(route, "path", "unmatched"),
            scope["method"],
            status,
            time.perf_counter() - started,
            version,
            role,
        )


_INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


@dataclass(frozen=True)
class _RouteTemplate:
    path: str


_PREDICT_ROUTE = _RouteTemplate("/predict")
_INFER_ROUTE = _RouteTemplate("/v2/models/{name}/infer")
_INFER_VERSION_ROUTE = _RouteTemplate("/v2/models/{name}/versions/{version}/infer")


class _Disconnected(Exception):
    pass


async def _read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _hot_route(scope: dict[str, Any], receive: Any, send: Any) -> bool:
    """Serve a hot route without FastAPI; False when the path is not one."""
    path = scope["path"]
    infer = None
    if path == "/predict":
        scope["route"] = _PREDICT_ROUTE
    else:
        infer = _INFER_PATH.match(path)
        if infer is None:
            return False
        scope["route"] = _INFER_VERSION_ROUTE if infer.group(2) else _INFER_ROUTE
    try:
        runtime = hot(scope)
        body = await _read_body(receive)
        rid = request_id(scope)
        if infer is None:
            answer = await runtime.predict(body, rid)
        else:
            header = None
            for name, value in scope["headers"]:
                if name == b"inference-header-content-length":
                    header = value.decode("latin-1")
                    break
            version = unquote(infer.group(2)) if infer.group(2) else None
            answer = await runtime.infer(unquote(infer.group(1)), body, header, rid, version)
    except _Disconnected:
        return True
    except KubeloopError as exc:
        await _error_for(exc, path)(scope, receive, send)
        return True
    except Exception:  # noqa: BLE001 - the same 500 as the app's handler, worker alive
        log.exception("unexpected error on POST %s", path)
        await _error_response(
            500,
            "internal_error",
            "unexpected server error; it was logged with its traceback",
            path=path,
        )(scope, receive, send)
        return True
    scope[ANSWER_KEY] = (answer.model_version, answer.role)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(answer.body)).encode()),
        (b"x-request-id", rid.encode()),
    ]
    if answer.headers:
        headers += [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
    return True


def _in_flight_gauge(scope: dict[str, Any]) -> Any:
    """kubeloop_requests_in_flight, or None for probes and scrapes (a scrape would always see
    itself in flight) and before the runtime exists."""
    if scope["path"].startswith(("/health", "/metrics")) or "app" not in scope:
        return None
    runtime = getattr(scope["app"].state, "runtime", None)
    return runtime.metrics.in_flight if runtime is not None else None


def _limited(receive: Any, limit: int) -> Any:
    seen = 0

    async def wrapped() -> dict[str, Any]:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"body larger than {limit} bytes: split the batch")
        return message

    return wrapped


def _error_for(exc: KubeloopError, path: str) -> Response:
    status = getattr(exc, "status_code", 500)
    code = getattr(exc, "code", None) or _code_for(status)
    return _error_response(
        status, code, exc.message, exc.field, getattr(exc, "headers", None), path=path
    )


async def _serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KubeloopError)
    return _error_for(exc, request.url.path)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    field = field_path(first.get("loc", ()))
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return _error_response(422, "invalid_field", message, field, path=request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs"
    return _error_response(
        exc.status_code,
        _code_for(exc.status_code),
        message,
        headers=getattr(exc, "headers", None),
        path=request.url.path,
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    log.debug("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=499)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error_response(
        500,
        "internal_error",
        "unexpected server error; it was logged with its traceback",
        path=request.url.path,
    )


def _code_for(status: int) -> str:
    return {
        400: "invalid_request",
        401: "unauthorized",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        422: "invalid_field",
        503: "unavailable",
    }.get(status, "internal_error" if status >= 500 else "error")


# -- the app -----------------------------------------------------------------------------------
def _openapi(app: FastAPI):
    """OpenAPI with the hot routes' request schemas (they parse bodies without pydantic)."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in schemas.DOC_MODELS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        spec["components"]["securitySchemes"] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "KUBELOOP_API_TOKEN (required when the server has one)",
            }
        }
        for router in (predict_router, admin_router):  # guarded by the token dependency
            for route in router.routes:
                for method in getattr(route, "methods", ()):
                    operation = spec["paths"].get(route.path, {}).get(method.lower())
                    if operation is not None:
                        operation.update(BEARER)
        app.openapi_schema = spec
        return spec

    return build


DESCRIPTION = """Predictions from the MLflow registry's `champion`, with Feast online features,
hot swaps, shadow and canary rollouts, a prediction log and Prometheus metrics.

Errors always look like `{"error": {"code", "message", "field"}}`. Predict, infer, features,
feedback and admin routes need `Authorization: Bearer <KUBELOOP_API_TOKEN>` when a token is set.
"""


def create_app(settings: ServingSettings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """The server app; ``runtime`` defaults to the real one built from ``settings``."""
    settings = settings or ServingSettings()
    runtime = runtime or Runtime.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        await runtime.wait_ready(settings.startup_wait_seconds)
        try:
            yield
        finally:
            await runtime.stop()

    off = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        title="kubeloop model server",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=None if settings.opentelemetry else off,
    )
    app.state.runtime = runtime
    app.state.token = f"Bearer {settings.token}".encode() if settings.token else None
    for router in (
        hot_router,
        predict_router,
        health_router,
        metrics_router,
        v2_router,
        admin_router,
    ):
        app.include_router(router)
    app.add_exception_handler(KubeloopError, _serving_error)
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(
        ServingMiddleware, max_body_bytes=settings.max_body_bytes, fast_path=settings.asgi_fast_path
    )
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    if settings.token is None:
        log.warning(
            "KUBELOOP_API_TOKEN is not set: predict, feedback and admin routes are open "
            "(allowed only with KUBELOOP_ENV=dev)"
        )
    return app


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
    )
    for noisy in ("feast", "alembic", "urllib3", "mlflow.store"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def app_from_env() -> FastAPI:
    """The factory each uvicorn worker calls (the entry point of a server process): settings
    from the environment, logging, and the GIL switch interval (background threads such as a
    registry poll, ~10 ms of SQLAlchemy, hand the GIL back to the event loop after
    ``KUBELOOP_GIL_SWITCH_MS`` instead of Python's 5 ms)."""
    settings = ServingSettings()
    configure_logging(settings.log_level)
    if settings.gil_switch_ms:
        sys.setswitchinterval(settings.gil_switch_ms / 1000.0)
    return create_app(settings)
