"""Error responses: the one JSON error shape, FastAPI's exception handlers, and who answered.

Every error leaves as ``{"error": {"code", "message", "field"}}`` with its status (on the Open
Inference Protocol routes, ``/v2``, ``error`` is the message string the protocol defines). The
hot routes (``serving.inference``) and FastAPI's handlers below build it with the same
``error_for``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from kubeloop.errors import KubeloopError
from serving.errors import ServingError, error_body, field_path

log = logging.getLogger(__name__)

JSON = "application/json"
# Role and model version of a request that never reached a model (bad input, auth, a
# feature-store outage, a client that hung up): on its metric samples and response headers.
NO_MODEL = "none"
# Where a request's (model version, role) is kept in the ASGI scope for metrics and headers.
ANSWER_KEY = "kubeloop.answer"
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection first


def error_response(
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


def code_for(status: int) -> str:
    return {
        400: "invalid_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        422: "invalid_field",
        CLIENT_CLOSED: "client_closed_request",
        503: "unavailable",
    }.get(status, "internal_error" if status >= 500 else "error")


def error_for(exc: KubeloopError, path: str) -> Response:
    status = getattr(exc, "status_code", 500)
    code = getattr(exc, "code", None) or code_for(status)
    return error_response(
        status, code, exc.message, exc.field, getattr(exc, "headers", None), path=path
    )


def unexpected_error(path: str) -> Response:
    """A bug's 500: the traceback goes to the log, never to the caller."""
    return error_response(
        500,
        "internal_error",
        "unexpected server error; it was logged with its traceback",
        path=path,
    )


def client_closed(path: str) -> Response:
    """What a request whose client hung up mid-body is counted as (nobody reads it)."""
    return error_response(
        CLIENT_CLOSED, code_for(CLIENT_CLOSED), "the client closed the connection", path=path
    )


def answered_by(exc: BaseException) -> tuple[str, str]:
    """(model version, role) an error belongs to: the model's for a failed prediction,
    ``none`` for anything that never reached a model."""
    return (
        getattr(exc, "model_version", None) or NO_MODEL,
        getattr(exc, "role", None) or NO_MODEL,
    )


# -- FastAPI's exception handlers (every route but the hot ones, which catch their own) ------
async def _serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, KubeloopError)
    request.scope[ANSWER_KEY] = answered_by(exc)
    return error_for(exc, request.url.path)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first: dict[str, Any] = (
        dict(exc.errors()[0]) if exc.errors() else {"loc": (), "msg": "invalid request"}
    )
    if first.get("type") == "json_invalid":  # the body as a whole, not a field of it
        reason = (first.get("ctx") or {}).get("error", first.get("msg"))
        return error_response(
            400, code_for(400), f"the body is not valid JSON: {reason}", path=request.url.path
        )
    field = field_path(tuple(first.get("loc", ())))
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return error_response(422, "invalid_field", message, field, path=request.url.path)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}; see /docs"
    return error_response(
        exc.status_code,
        code_for(exc.status_code),
        message,
        headers=getattr(exc, "headers", None),
        path=request.url.path,
    )


async def _client_gone(request: Request, exc: Exception) -> Response:
    log.debug("client disconnected during %s %s", request.method, request.url.path)
    return client_closed(request.url.path)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return unexpected_error(request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KubeloopError, _serving_error)
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)
