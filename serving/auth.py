"""The bearer token check of the guarded routes.

``KUBELOOP_API_TOKEN`` guards predict, V2 infer, features and feedback; health, metrics, V2
metadata and the docs stay open for probes, Prometheus and clients. The token lives on
``app.state.tokens`` so the hot routes (plain ASGI) and FastAPI's dependencies check the same
bytes the same way (constant time).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from serving.errors import Unauthorized
from serving.settings import ServingSettings


@dataclass(frozen=True)
class Tokens:
    """The ``Authorization`` header values the server accepts (None: no token configured)."""

    predict: bytes | None

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> Tokens:
        return cls(predict=_header(settings.token))


def _header(token: str | None) -> bytes | None:
    return f"Bearer {token}".encode() if token else None


def _authorization(scope: Mapping[str, Any]) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value
    return None


def check_predict_token(scope: Mapping[str, Any]) -> None:
    """Constant-time check of ``Authorization: Bearer <KUBELOOP_API_TOKEN>``."""
    expected = scope["app"].state.tokens.predict
    if expected is None:
        return
    sent = _authorization(scope)
    if sent is None or not hmac.compare_digest(sent, expected):
        raise Unauthorized("missing or wrong bearer token: send 'Authorization: Bearer <token>'")


async def _require_predict_token(request: Request) -> None:
    check_predict_token(request.scope)


PREDICT_GUARD = [Depends(_require_predict_token)]
