"""The one handler of the hot routes: ``POST /predict`` and ``POST /v2/models/{name}[/versions/
{version}]/infer``.

Plain ASGI: FastAPI's routing, request objects and response classes took more CPU than a whole
1-row prediction. ``ServingMiddleware`` calls ``HotRoutes`` directly for these paths (the
default), or the app's router does (``KUBELOOP_ASGI_FAST_PATH=false``); either way this is the
only code that serves them, checks their token and maps their errors. Their OpenAPI
operations are written in ``serving.openapi``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import uuid_utils
from starlette.responses import Response

from kubeloop.errors import KubeloopError
from serving.auth import check_predict_token
from serving.responses import (
    ANSWER_KEY,
    NO_MODEL,
    answered_by,
    client_closed,
    error_for,
    unexpected_error,
)
from serving.service import Answer

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,48}$")
_INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")


@dataclass(frozen=True)
class RouteTemplate:
    """What the request metrics label a hot route with (FastAPI's routes carry ``path``)."""

    path: str


PREDICT = RouteTemplate("/predict")
INFER = RouteTemplate("/v2/models/{name}/infer")
INFER_VERSION = RouteTemplate("/v2/models/{name}/versions/{version}/infer")
PATHS = (PREDICT.path, INFER.path, INFER_VERSION.path)


class ClientGone(Exception):
    """The client hung up before its body arrived."""


def request_id(scope: Mapping[str, Any]) -> str:
    """The caller's ``X-Request-ID`` when it is a sane id, else a fresh one.

    A fresh id is a UUIDv7 (RFC 9562), which starts with the time: the prediction log's
    ``request_id`` index then grows at its right edge instead of at random leaves. PostgreSQL
    spent 13% less CPU per stored row at 2 million rows (``bench/log_ship.py``), a gap that
    grows once a random index outgrows memory; and it costs 0.6 µs to make against 4."""
    value = header(scope, b"x-request-id")
    if value is not None and _REQUEST_ID.match(value):
        return value
    return uuid_utils.uuid7().hex


def header(scope: Mapping[str, Any], wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return value.decode("latin-1")
    return None


async def read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class HotRoutes:
    """The ASGI app serving the hot routes (an object, so Starlette's router mounts it as
    ASGI rather than as a request/response function)."""

    @staticmethod
    def matches(path: str) -> bool:
        return path == PREDICT.path or _INFER_PATH.match(path) is not None

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]
        infer = _INFER_PATH.match(path)
        if infer is None:
            scope["route"] = PREDICT
        else:
            scope["route"] = INFER_VERSION if infer.group(2) else INFER
        scope[ANSWER_KEY] = (NO_MODEL, NO_MODEL)
        rid = request_id(scope)
        try:
            check_predict_token(scope)
            runtime = scope["app"].state.runtime
            body = await read_body(receive)
            if infer is None:
                answer = await runtime.predict(body, rid)
            else:
                version = unquote(infer.group(2)) if infer.group(2) else None
                answer = await runtime.infer(
                    unquote(infer.group(1)),
                    body,
                    header(scope, b"inference-header-content-length"),
                    rid,
                    version,
                )
        except ClientGone:
            log.debug("client disconnected during POST %s", path)
            await client_closed(path)(scope, receive, send)
        except KubeloopError as exc:
            scope[ANSWER_KEY] = answered_by(exc)
            await _send_error(error_for(exc, path), rid, scope, receive, send)
        except Exception:
            log.exception("unexpected error on POST %s (request %s)", path, rid)
            await _send_error(unexpected_error(path), rid, scope, receive, send)
        else:
            await _send_answer(scope, send, answer, rid)


async def _send_error(
    response: Response, rid: str, scope: MutableMapping[str, Any], receive: Any, send: Any
) -> None:
    """An error carries the request id too, so that a client can match it to its call."""
    response.headers["x-request-id"] = rid
    await response(scope, receive, send)


async def _send_answer(
    scope: MutableMapping[str, Any], send: Any, answer: Answer, rid: str
) -> None:
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
