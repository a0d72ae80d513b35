"""Errors of the model server and the one JSON shape every error response takes.

Business logic raises these (never ``HTTPException``); ``serving.responses`` turns any
of them, and FastAPI's own validation and routing errors, into::

    {"error": {"code": "invalid_feature", "message": "...", "field": "records[0].features.x"}}

Messages say what was wrong and what to do next.
"""

from __future__ import annotations

from typing import Any

import orjson

from kubeloop.errors import KubeloopError


class ServingError(KubeloopError):
    """Base class of the server's errors: an HTTP status and a stable machine-readable code."""

    status_code = 500
    code = "internal_error"
    headers: dict[str, str] | None = None


class InvalidRequest(ServingError):
    """The body is not JSON or not shaped like the route expects."""

    status_code = 400
    code = "invalid_request"


class InvalidFeature(ServingError):
    """A feature is missing, unknown, of the wrong type, NaN or infinite."""

    status_code = 422
    code = "invalid_feature"


class InvalidField(ServingError):
    """A field other than a feature is invalid (FastAPI validation, entity ids, weights)."""

    status_code = 422
    code = "invalid_field"


class PayloadTooLarge(ServingError):
    """Too many records in one request, or a body larger than the configured limit."""

    status_code = 413
    code = "payload_too_large"


class EntityNotFound(ServingError):
    """An entity id has no features in the online store."""

    status_code = 404
    code = "entity_not_found"


class NotFound(ServingError):
    """A route or a model name that does not exist."""

    status_code = 404
    code = "not_found"


class Unauthorized(ServingError):
    """Missing or wrong bearer token."""

    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServingError):
    """A valid token that does not grant this route (the predict token on an admin route)."""

    status_code = 403
    code = "forbidden"


class ModelNotReady(ServingError):
    """No model is loaded yet (start-up, or the registry has no champion)."""

    status_code = 503
    code = "model_not_ready"
    headers = {"Retry-After": "5"}  # the registry poll or start-up, not the request, decides


class Unavailable(ServingError):
    """A backing service (feature store, prediction log, registry) cannot be reached."""

    status_code = 503
    code = "unavailable"
    headers = {"Retry-After": "5"}


def error_body(code: str, message: str, field: str | None = None) -> bytes:
    """The single error shape, serialized."""
    return orjson.dumps({"error": {"code": code, "message": message, "field": field}})


def field_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """FastAPI's error location (``("body", "records", 0, "x")``) as ``records[0].x``."""
    parts = [p for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


class PredictionFailed(ServingError):
    """The model raised on this input (the input passed validation); the error belongs to that
    model (its registry version and role label the response and its metrics)."""

    status_code = 500
    code = "prediction_failed"

    def __init__(self, message: str, *, model_version: str, role: str) -> None:
        super().__init__(message)
        self.model_version = model_version
        self.role = role
