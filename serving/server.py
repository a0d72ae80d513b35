"""Start uvicorn for the server: one process, or several workers sharing one socket.

Choices that matter under load (see docs/serving.md):

* uvloop and httptools, no access log, no ``server`` header.
* With several workers uvicorn binds the socket itself with ``proto=0``, and asyncio then
  never sets ``TCP_NODELAY`` on accepted connections: every keep-alive response waits ~40 ms
  for a delayed ACK (Kludex/uvicorn#3149). We bind the socket ourselves with
  ``IPPROTO_TCP`` so accepted connections get ``TCP_NODELAY``.
* Several workers export metrics through ``PROMETHEUS_MULTIPROC_DIR``: set here (under the work
  folder) when missing, and emptied before the workers start.
* uvicorn writes a response's head and body in two ``write`` calls: two packets, two wake-ups
  of the client, and on loopback the first write alone took ~20% of the server's time in a
  profile. ``HttpProtocol`` holds the head until the body follows (same loop iteration) and
  sends both in one write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.settings import ServingSettings

log = logging.getLogger(__name__)

APP = "serving.app:app_from_env"
HTTP_PROTOCOL = "serving.server:HttpProtocol"
_HEAD_START = b"HTTP/1.1 "


class CoalescingTransport:
    """A transport that holds an HTTP response head until the next write (its body), or until
    the end of the current loop iteration (bodiless responses), then writes once."""

    __slots__ = ("_transport", "_loop", "_head")

    def __init__(self, transport: Any, loop: Any):
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: Any) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + bytes(data))
        elif type(data) is bytes and data.startswith(_HEAD_START) and data.endswith(b"\r\n\r\n"):
            self._head = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing each response in one piece."""

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose accepted connections get TCP_NODELAY."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def prepare_multiprocess_metrics(settings: ServingSettings) -> Path:
    directory = Path(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR") or settings.work_dir / "prometheus-multiproc"
    )
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def uvicorn_config(settings: ServingSettings, **overrides: Any):
    import uvicorn

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "factory": True,
        "loop": "uvloop",
        "http": HTTP_PROTOCOL,
        "lifespan": "on",
        "access_log": settings.access_log,
        "log_level": settings.log_level,
        "server_header": False,
        "timeout_keep_alive": 30,
        "timeout_graceful_shutdown": 20,
    }
    options.update(overrides)
    return uvicorn.Config(APP, **options)


def run(settings: ServingSettings) -> int:
    """Serve until stopped; returns the exit code."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from serving.app import configure_logging

    configure_logging(settings.log_level)
    settings.export_to_environment()  # the workers build the same settings
    # Read by OpenMP and BLAS when they load (with scikit-learn, after this point).
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(settings.model_threads)
    if settings.workers > 1:
        prepare_multiprocess_metrics(settings)
    config = uvicorn_config(settings)
    if settings.workers > 1:
        sock = bind_socket(settings.host, settings.port)
        log.info(
            "kubeloop server: %d workers on %s:%d", settings.workers, settings.host, settings.port
        )
        Multiprocess(config, sockets=[sock]).run()
        return 0
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 3
