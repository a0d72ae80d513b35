"""The KFP gateway: data scientists reach Kubeflow Pipelines through it, never directly.

"A pipeline run, once started, cannot be stopped by a team member; only a newer trigger
supersedes it." Standalone KFP has no per-user authorization, and Kubernetes RBAC on
``services/proxy`` maps HTTP methods to verbs, so submitting a run (``POST .../runs``) and
terminating one (``POST .../runs/<id>:terminate``) are both ``create``: a Role cannot allow one
and refuse the other. So the chart's data-scientist Role may proxy only to this gateway, which
forwards every request to the KFP API (``/apis/...``) or UI (the rest) except those that stop
or delete runs; those get a 403 naming the rule. Triggers (the monitor and training CronJobs,
the merge workflow) talk to the KFP API directly and may terminate a run they supersede.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# (method, path pattern, why): KFP API v1 and v2 paths, also when the UI forwards them.
REFUSED = (
    ("POST", re.compile(r"/apis/v[12]beta1/runs/[^/]+(:terminate|/terminate)$"), "terminate a run"),
    ("DELETE", re.compile(r"/apis/v[12]beta1/runs/[^/]+$"), "delete a run"),
    ("POST", re.compile(r"/apis/v[12]beta1/runs/[^/]+(:retry|/retry)$"), "retry a stopped run"),
    ("DELETE", re.compile(r"/apis/v[12]beta1/(recurringruns|jobs)/[^/]+$"), "delete a schedule"),
)


def refusal(method: str, path: str) -> str | None:
    """Why the gateway refuses this request, or None to forward it."""
    for refused_method, pattern, what in REFUSED:
        if method.upper() == refused_method and pattern.search(path.split("?", 1)[0]):
            return (
                f"{method.upper()} {path}: people may not {what}; a run ends by itself or is "
                "superseded by a newer trigger (kubeloop run training / kubeloop trigger)"
            )
    return None


@dataclass(frozen=True)
class Upstreams:
    api: str  # the KFP API server, e.g. http://ml-pipeline.kubeflow:8888
    ui: str  # the KFP UI, e.g. http://ml-pipeline-ui.kubeflow:80

    def for_path(self, path: str) -> str:
        return self.api if path.startswith("/apis/") else self.ui


HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "content-encoding",
}


def app(upstreams: Upstreams):
    """The ASGI app: refuse, or forward the request and relay the answer."""
    import contextlib

    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    client = httpx.AsyncClient(timeout=httpx.Timeout(60.0))

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def forward(request: Request) -> Response:
        path = request.url.path
        why = refusal(request.method, path)
        if why is not None:
            return JSONResponse({"error": why, "code": 7, "message": why}, status_code=403)
        url = upstreams.for_path(path).rstrip("/") + path
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        answer = await client.request(
            request.method,
            url,
            params=request.query_params,
            headers=headers,
            content=await request.body(),
        )
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return Response(answer.content, status_code=answer.status_code, headers=kept)

    @contextlib.asynccontextmanager
    async def lifespan(_):
        yield
        await client.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(
        routes=[
            Route("/gateway/healthz", health),
            Route("/{path:path}", forward, methods=methods),
        ],
        lifespan=lifespan,
    )
