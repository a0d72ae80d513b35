"""Prometheus, Pushgateway and Alertmanager as plain processes on 127.0.0.1, for the tests.

Each runs the Debian binary with its own flags, configuration and storage in a test folder, on
a free port, and is stopped (SIGTERM, then SIGKILL) when the test ends. Two small stand-ins run
in threads: a webhook receiver for Alertmanager's notifications, and a KFP API server that
accepts the monitoring job's retraining run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml


@dataclass
class Service:
    """A started process and where it listens."""

    name: str
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def wait_ready(service: Service, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.name} exited with {service.process.returncode}:\n{service.log_tail()}"
            )
        try:
            response = httpx.get(service.url + path, timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{service.name} not ready after {timeout}s ({last}):\n{service.log_tail()}")


@contextmanager
def running(
    name: str, argv: Sequence[str], port: int, folder: Path, ready_path: str = "/-/ready"
) -> Iterator[Service]:
    """Start ``argv`` (already listening on ``port``), wait until ``ready_path`` answers 200,
    stop it on exit."""
    log = folder / f"{name}.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=folder
        )
    service = Service(name, port, process, log)
    try:
        wait_ready(service, ready_path)
        yield service
    finally:
        service.stop()


def prometheus_argv(binary: str, config: Path, storage: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        "--storage.tsdb.retention.time=1h",
    ]


def pushgateway_argv(binary: str, port: int) -> list[str]:
    return [binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]


def alertmanager_argv(binary: str, config: Path, storage: Path, port: int) -> list[str]:
    # An empty cluster address turns off the HA gossip (it would listen on 0.0.0.0:9094).
    return [
        binary,
        f"--config.file={config}",
        f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=warn",
    ]


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class Prometheus:
    """The HTTP API of a running Prometheus."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result (a vector; a scalar becomes one unlabelled sample)."""
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self._get("/api/v1/query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        return self._get(f"/api/v1/label/{label}/values", **{"match[]": match})

    def targets_up(self) -> dict[str, str]:
        data = self._get("/api/v1/targets", state="active")
        return {t["labels"]["job"]: t["health"] for t in data["activeTargets"]}

    def alerts(self) -> list[dict[str, Any]]:
        return self._get("/api/v1/alerts")["alerts"]

    def rule_health(self) -> list[tuple[str, str, str]]:
        """(rule name, health, last error) of every rule that is not ok."""
        groups = self._get("/api/v1/rules")["groups"]
        return [
            (r["name"], r["health"], r.get("lastError", ""))
            for g in groups
            for r in g["rules"]
            if r["health"] not in ("ok", "unknown")
        ]


def finite(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples whose value is a number (histogram_quantile of no traffic gives NaN)."""
    return [s for s in samples if s["value"][1] not in ("NaN", "+Inf", "-Inf")]


def eventually(check, timeout: float, step: float = 0.25, what: str = "condition"):
    """Call ``check`` until it returns something truthy; its last value otherwise fails."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met after {timeout}s (last: {value!r})")
        time.sleep(step)


# -- stand-ins ---------------------------------------------------------------------------------
@dataclass
class Received:
    """What the webhook receiver got: Alertmanager's notification bodies."""

    bodies: list[dict[str, Any]] = field(default_factory=list)

    def alerts(self, status: str = "firing") -> list[dict[str, Any]]:
        return [a for b in self.bodies for a in b.get("alerts", []) if a["status"] == status]


@contextmanager
def http_stub(handle) -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 whose requests go to ``handle(method, path, body)``
    -> (status, JSON body); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            status, answer = handle(self.command, self.path, self.rfile.read(length))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, Received]]:
    received = Received()

    def handle(method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "POST":
            received.bodies.append(json.loads(body))
        return 200, {}

    with http_stub(handle) as url:
        yield url + "/alerts", received


@contextmanager
def kfp_api() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A KFP v2beta1 API server that accepts runs (and never finishes them): enough for the
    monitoring job's cluster launcher to launch a retraining."""
    runs: list[dict[str, Any]] = []

    def handle(method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path.startswith("/apis/v2beta1/healthz"):
            return 200, {"multi_user": False}
        if path.startswith("/apis/v2beta1/experiments") and method == "GET":
            return 200, {"experiments": [], "total_size": 0}
        if path == "/apis/v2beta1/experiments":
            return 200, {"experiment_id": "exp-1", **json.loads(body)}
        if path == "/apis/v2beta1/runs" and method == "POST":
            run = {**json.loads(body), "run_id": f"run-{len(runs) + 1}", "state": "PENDING"}
            runs.append(run)
            return 200, run
        if path.startswith("/apis/v2beta1/runs/"):
            return 200, {"run_id": path.rsplit("/", 1)[-1], "state": "RUNNING"}
        return 404, {"error": f"no route {method} {path}"}

    with http_stub(handle) as url:
        yield url, runs


__all__ = [
    "Prometheus",
    "Received",
    "Service",
    "alertmanager_argv",
    "eventually",
    "finite",
    "kfp_api",
    "prometheus_argv",
    "pushgateway_argv",
    "running",
    "webhook_receiver",
    "write_yaml",
]
