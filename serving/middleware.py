"""``ServingMiddleware``: what every request goes through, as plain ASGI (no per-request task
or buffering).

* the body size limit (413 from ``Content-Length``, or while a chunked body streams in);
* the hot routes (``serving.inference.HotRoutes``) when ``fast_path`` is on, before FastAPI;
* request metrics (route template, status, model version, role, latency) and the in-flight
  gauge;
* ``X-Model-Version`` and ``X-Model-Role`` on every response: the model that answered, or
  ``none`` for a request that never reached one.
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from serving.errors import PayloadTooLarge
from serving.inference import HotRoutes, request_id
from serving.responses import ANSWER_KEY, NO_MODEL, error_response

NOBODY = (NO_MODEL, NO_MODEL)


class ServingMiddleware:
    def __init__(self, app: Any, max_body_bytes: int, fast_path: bool = True):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.fast_path = fast_path
        self.hot = HotRoutes()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_labelled(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                version, role = scope.get(ANSWER_KEY, NOBODY)
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-model-version", version.encode()),
                    (b"x-model-role", role.encode()),
                ]
            await send(message)

        in_flight = _in_flight_gauge(scope)
        if in_flight is not None:
            in_flight.inc()
        try:
            too_big = self._oversized(scope)
            if too_big is not None:
                await too_big(scope, receive, send_labelled)
            elif self.fast_path and scope["method"] == "POST" and self.hot.matches(scope["path"]):
                await self.hot(scope, self._limited(scope, receive), send_labelled)
            else:
                await self.app(scope, self._limited(scope, receive), send_labelled)
        finally:
            if in_flight is not None:
                in_flight.dec()
            _observe(scope, status, started)

    def _oversized(self, scope: MutableMapping[str, Any]) -> Any:
        """The 413 response for a declared ``Content-Length`` over the limit, else None."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return None
                if length <= self.max_body_bytes:
                    return None
                return error_response(
                    413,
                    PayloadTooLarge.code,
                    f"body of {length} bytes; the limit is {self.max_body_bytes}: split the batch",
                    headers={"x-request-id": request_id(scope)},
                    path=scope["path"],
                )
        return None

    def _limited(self, scope: MutableMapping[str, Any], receive: Any) -> Any:
        """``receive`` that raises 413 once a body without ``Content-Length`` passes the limit."""
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return receive
        if any(name == b"content-length" for name, _ in scope["headers"]):
            return receive
        limit, seen = self.max_body_bytes, 0

        async def wrapped() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"body larger than {limit} bytes: split the batch")
            return message

        return wrapped


def _observe(scope: MutableMapping[str, Any], status: int, started: float) -> None:
    runtime = getattr(scope["app"].state, "runtime", None) if "app" in scope else None
    if runtime is None:
        return
    version, role = scope.get(ANSWER_KEY, NOBODY)
    runtime.metrics.observe_request(
        getattr(scope.get("route"), "path", "unmatched"),
        scope["method"],
        status,
        time.perf_counter() - started,
        version,
        role,
    )


def _in_flight_gauge(scope: MutableMapping[str, Any]) -> Any:
    """kubeloop_requests_in_flight, or None for probes and scrapes (a scrape would always see
    itself in flight) and before the runtime exists."""
    if scope["path"].startswith(("/health", "/metrics")) or "app" not in scope:
        return None
    runtime = getattr(scope["app"].state, "runtime", None)
    return runtime.metrics.in_flight if runtime is not None else None
