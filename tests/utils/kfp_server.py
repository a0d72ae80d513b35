"""A stand-in KFP API server on 127.0.0.1 that records what ``kfp.Client`` sends.

There is no Kubeflow cluster here, so tests check the real HTTP requests of the real client
against the API models of ``kfp-server-api``; the answers are the minimal valid ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    body: Any
    headers: dict[str, str]  # lower-case names


@dataclass
class KfpStub:
    host: str
    requests: list[Recorded] = field(default_factory=list)
    run_state: str = "PENDING"  # what GET /runs/<id> answers; ':terminate' sets CANCELED

    def posted(self, path: str) -> list[Any]:
        return [r.body for r in self.requests if r.method == "POST" and r.path == path]


def _answer(stub: KfpStub, method: str, path: str, body: Any) -> dict:
    if path.endswith("/healthz"):
        return {"multi_user": False, "commit_sha": "stub", "tag_name": "2.x"}
    if path.endswith("/experiments") and method == "GET":
        return {"experiments": [], "total_size": 0}
    if path.endswith("/experiments") and method == "POST":
        return {"experiment_id": "exp-1", "display_name": body.get("display_name", "")}
    if path.endswith("/runs") and method == "POST":
        return {"run_id": "run-1", "display_name": body.get("display_name", ""), "state": "PENDING"}
    if path.endswith(":terminate") and method == "POST":
        stub.run_state = "CANCELED"
        return {}
    if "/runs/" in path and method == "GET":
        return {"run_id": path.rsplit("/", 1)[-1], "state": stub.run_state}
    return {}


@contextmanager
def kfp_stub() -> Iterator[KfpStub]:
    stub: KfpStub

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            url = urlparse(self.path)
            stub.requests.append(
                Recorded(
                    self.command,
                    url.path,
                    url.query,
                    body,
                    {k.lower(): v for k, v in self.headers.items()},
                )
            )
            payload = json.dumps(_answer(stub, self.command, url.path, body or {})).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _handle

        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub = KfpStub(host=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
