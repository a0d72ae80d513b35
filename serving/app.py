"""The server app: ``create_app(settings)`` wires the runtime, routes, middleware, error handlers
and OpenAPI together (tests pass their own ``Runtime``); ``app_from_env`` is the factory each
uvicorn worker calls (``python -m serving`` starts them).

Where things live: ``serving.inference`` serves the hot routes (predict, V2 infer),
``serving.routes`` the others, ``serving.middleware`` does limits and request metrics,
``serving.responses`` the error shape and handlers, ``serving.auth`` the token,
``serving.openapi`` the document, ``serving.service`` what the routes do.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from kubeloop.images import VERSION
from serving.auth import Tokens
from serving.middleware import ServingMiddleware
from serving.openapi import openapi_builder
from serving.responses import install_error_handlers
from serving.routes import include_routes
from serving.service import Runtime
from serving.settings import ServingSettings

log = logging.getLogger(__name__)

DESCRIPTION = """Predictions from the MLflow registry's `champion`, with Feast online features,
hot swaps, shadow and canary rollouts, a prediction log and Prometheus metrics.

Errors always look like `{"error": {"code", "message", "field"}}`. Predict, infer, features
and feedback need `Authorization: Bearer <KUBELOOP_API_TOKEN>` when a token is set; the admin
routes need `Authorization: Bearer <KUBELOOP_ADMIN_TOKEN>` (the predict token is refused).
Every response names the model that answered in `X-Model-Version` and `X-Model-Role`
(`none` when the request never reached a model).
"""


class ServingApp(FastAPI):
    """FastAPI with ``ServingMiddleware`` outermost. The hot routes then skip FastAPI's own
    layers (the error page, exception telemetry, its body limit: a coroutine and a ``send``
    wrapper each, per request), which the hot routes do not need: they answer their own errors
    and ``ServingMiddleware`` enforces the body limit. Every other route still passes through
    all of them."""

    def __init__(self, *, max_body_bytes: int, fast_path: bool, **kwargs: Any):
        super().__init__(**kwargs)
        self._max_body_bytes, self._fast_path = max_body_bytes, fast_path

    def build_middleware_stack(self) -> Any:
        return ServingMiddleware(
            super().build_middleware_stack(), self._max_body_bytes, self._fast_path
        )


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

    telemetry: Any = (
        None if settings.opentelemetry else {"tracing": False, "metrics": False, "logs": False}
    )
    app = ServingApp(
        max_body_bytes=settings.max_body_bytes,
        fast_path=settings.asgi_fast_path,
        title="kubeloop model server",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        telemetry=telemetry,
    )
    app.state.runtime = runtime
    app.state.tokens = Tokens.from_settings(settings)
    include_routes(app)
    install_error_handlers(app)
    app.openapi = openapi_builder(app)  # type: ignore[method-assign]
    if settings.token is None:
        log.warning(
            "KUBELOOP_API_TOKEN is not set: predict, infer, features and feedback are open "
            "(allowed only with KUBELOOP_ENV=dev)"
        )
    if settings.admin_secret is None:
        log.warning(
            "KUBELOOP_ADMIN_TOKEN is not set: the admin routes are %s",
            "open (dev, no token)" if app.state.tokens.admin_open else "disabled (403)",
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
