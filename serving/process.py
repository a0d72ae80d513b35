"""The model server in a child process: ``python -m serving`` with a given environment, started
and stopped as Kubernetes does (readiness wait, SIGTERM, then SIGKILL). The demo, the benchmarks
and the tests run the real server this way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m serving`` in a subprocess, with ``env`` (KUBELOOP_* etc.) on top of a clean
    copy of this process's environment."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        port: int | None = None,
        log_path: Path | None = None,
        ready_timeout: float = 90.0,
        wait_ready: bool = True,
    ):
        self.port = port or free_port()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("KUBELOOP_", "MLFLOW_", "PROMETHEUS_MULTIPROC"))
        }
        self.env.update(
            {"PYTHONUNBUFFERED": "1", "KUBELOOP_HOST": "127.0.0.1", "KUBELOOP_PORT": str(self.port)}
        )
        self.env.update(env)
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.wait_ready = wait_ready
        self.process: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving"],
            cwd=REPO,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if self.wait_ready:
            self.await_ready()
        return self

    def await_ready(self, path: str = "/health/ready") -> None:
        import httpx

        deadline = time.monotonic() + self.ready_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}: {self.log_tail()}"
                )
            try:
                response = httpx.get(self.url + path, timeout=2)
                if response.status_code == 200:
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        raise TimeoutError(
            f"server not ready after {self.ready_timeout}s ({last}): {self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the server, as Kubernetes does (graceful: the prediction log is flushed),
        then SIGKILL to its whole process group after ``timeout``. Returns the exit code;
        uvicorn re-raises the signal after a graceful shutdown, so that is -SIGTERM."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
