"""Bearer tokens: one to predict, another for the admin routes.

``KUBELOOP_API_TOKEN`` guards predict, V2 infer, features and feedback; ``KUBELOOP_ADMIN_TOKEN``
guards ``/admin/*`` (canary weight, rollback, reload), so a client that may predict cannot
move a rollout. Health, metrics, V2 metadata and the docs stay open for probes, Prometheus and
clients. The tokens live on ``app.state.tokens`` so the hot routes (plain ASGI) and FastAPI's
dependencies check the same bytes the same way (constant time).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from serving.errors import Forbidden, Unauthorized
from serving.settings import ServingSettings

WRONG_TOKEN = "missing or wrong bearer token: send 'Authorization: Bearer <token>'"


@dataclass(frozen=True)
class Tokens:
    """The ``Authorization`` header values the server accepts (None: no token configured)."""

    predict: bytes | None
    admin: bytes | None
    admin_open: bool  # dev without any token: the admin routes are open too

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> Tokens:
        return cls(
            predict=_header(settings.token),
            admin=_header(settings.admin_secret),
            admin_open=settings.env == "dev" and not settings.token and not settings.admin_secret,
        )


def _header(token: str | None) -> bytes | None:
    return f"Bearer {token}".encode() if token else None


def _authorization(scope: Mapping[str, Any]) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            if value.startswith(b"Bearer "):  # as nearly every client sends it: no copy
                return value
            # The scheme is case-insensitive (RFC 9110 11.1): "bearer <token>" is accepted too.
            scheme, _, credentials = value.partition(b" ")
            return b"Bearer " + credentials if scheme.lower() == b"bearer" else value
    return None


def _matches(sent: bytes | None, expected: bytes | None) -> bool:
    return sent is not None and expected is not None and hmac.compare_digest(sent, expected)


def check_predict_token(scope: Mapping[str, Any]) -> None:
    """``Authorization: Bearer <KUBELOOP_API_TOKEN>``, when the server has one."""
    expected = scope["app"].state.tokens.predict
    if expected is not None and not _matches(_authorization(scope), expected):
        raise Unauthorized(WRONG_TOKEN)


def check_admin_token(scope: Mapping[str, Any]) -> None:
    """``Authorization: Bearer <KUBELOOP_ADMIN_TOKEN>``; the predict token is forbidden here."""
    tokens: Tokens = scope["app"].state.tokens
    if tokens.admin_open:
        return
    sent = _authorization(scope)
    if _matches(sent, tokens.admin):
        return
    if tokens.admin is None:
        raise Forbidden("the admin routes are disabled: this server has no KUBELOOP_ADMIN_TOKEN")
    if _matches(sent, tokens.predict):
        raise Forbidden(
            "this token may predict, not administer: the admin routes need KUBELOOP_ADMIN_TOKEN"
        )
    raise Unauthorized(WRONG_TOKEN)


async def _require_predict_token(request: Request) -> None:
    check_predict_token(request.scope)


async def _require_admin_token(request: Request) -> None:
    check_admin_token(request.scope)


PREDICT_GUARD = [Depends(_require_predict_token)]
ADMIN_GUARD = [Depends(_require_admin_token)]
