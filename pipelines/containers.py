"""kfp.local's DockerRunner as a cluster runs the steps: one container per step, from the
pipeline image, sharing nothing with the others but the services and the KFP pipeline root.

A step's container gets what the chart's ConfigMap and Secret give a step's pod (the variables
named in ``kubeloop/images.py``), its own work folder, and host networking (the services this
machine reaches, it reaches). Where a setting points at this machine's disk, no other container
would find what a step leaves there: ``local_problems`` names each such setting.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubeloop.errors import KubeloopError
from kubeloop.images import PIPELINE_ENV_KEYS, PIPELINE_SECRET_KEYS
from kubeloop.settings import PlatformSettings

# A step's own scratch folder, as on the chart's pods (an emptyDir on /tmp).
CONTAINER_WORK_DIR = "/tmp/kubeloop"
# boto's variables besides the keys (region, session token) pass through as the Secret's would.
AWS_EXTRA = ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_SESSION_TOKEN")
# Settings of the runner itself, which mean nothing inside a step.
RUNNER_ONLY = ("KUBELOOP_LOCAL_RUNNER", "KUBELOOP_DOCKER_RUN_ARGS")


class NotShareable(KubeloopError):
    """A setting keeps state on this machine's disk, which a step's container cannot see."""


def local_problems(settings: PlatformSettings) -> list[str]:
    """Settings whose state would stay on one container's disk (empty: fit for containers)."""
    problems = []
    if not settings.tracking_uri.startswith(("http://", "https://")):
        problems.append("MLFLOW_TRACKING_URI: an MLflow tracking server (http://...)")
    if not settings.feast_registry:
        problems.append("KUBELOOP_FEAST_REGISTRY: a SQL registry (postgresql+psycopg://...)")
    if not settings.feast_offline_store:
        problems.append("KUBELOOP_FEAST_OFFLINE_STORE: PostgreSQL (postgresql+psycopg://...)")
    if settings.feast_online_store != "redis":
        problems.append("KUBELOOP_FEAST_ONLINE_STORE: redis")
    if not (settings.dvc_remote or "").startswith("s3://"):
        problems.append("KUBELOOP_DVC_REMOTE: an object store (s3://bucket/prefix)")
    if settings.log_url.startswith("sqlite"):
        problems.append(
            "KUBELOOP_PREDICTION_LOG_URL: the prediction log the ingest step reads production's "
            "labels from, a database server (postgresql+psycopg://...)"
        )
    return problems


def step_environment(settings: PlatformSettings) -> dict[str, str]:
    """What a step's container gets: the chart's ConfigMap and Secret keys found in this
    environment, these settings, and a work folder of its own."""
    names = (*PIPELINE_ENV_KEYS, *PIPELINE_SECRET_KEYS, *AWS_EXTRA)
    env = {name: os.environ[name] for name in names if name in os.environ}
    env.update(settings.export())
    for name in RUNNER_ONLY:
        env.pop(name, None)
    env["KUBELOOP_WORK_DIR"] = CONTAINER_WORK_DIR
    return env


def docker_runner(settings: PlatformSettings, pipeline_root: Path) -> Any:
    """The configured DockerRunner; refuses settings that would keep state on one disk.

    A pod's ``command`` replaces the image's ENTRYPOINT; Docker's command only follows it, so
    the entrypoint becomes ``env``, which runs KFP's ``sh -c ...`` as given. The pipeline root
    is the one bind mount (kfp.local's): the image's non-root user must be able to write it.
    """
    from kfp import local

    problems = local_problems(settings)
    if problems:
        raise NotShareable(
            "the docker runner gives each step its own disk; set " + "; ".join(problems)
        )
    pipeline_root.chmod(0o777)
    options: dict[str, Any] = {
        "network_mode": "host",
        "entrypoint": ["env"],
        "environment": step_environment(settings),
    }
    return local.DockerRunner(**{**options, **settings.docker_run_args})


@contextlib.contextmanager
def exit_status_kept() -> Iterator[None]:
    """kfp.local's DockerRunner reads each step's exit status correctly inside this block.

    kfp 2.16.1 starts every container with ``auto_remove=True`` and asks for its status after
    streaming its log: a step that fails fast is gone by then, and the ``NotFound`` that follows
    counts as exit 0. The failed step "succeeds" without outputs and the next one fails on a
    missing input instead (``task 'ingest' not found``, as make cluster-test saw it). Upstream:
    kubeflow/pipelines#13332 (fixes #13402 and #13907 open as of 2026-12); remove this once the
    pinned kfp ships one.
    """
    from kfp.local import docker_task_handler as handler

    original = handler.run_docker_container
    handler.run_docker_container = run_container
    try:
        yield
    finally:
        handler.run_docker_container = original


@contextlib.contextmanager
def removed_on_sigterm() -> Iterator[None]:
    """Inside this block SIGTERM ends the run by raising ``SystemExit`` (exit 143), so the
    running step's container is removed on the way out (``run_container``'s ``finally``).

    A newer trigger stops a local run with SIGTERM (``monitoring.launch.terminate_local``).
    Python's default for SIGTERM ends the process at once, and the step's container, which the
    engine runs outside the run's process group, ran on beside the newer run. Only the main
    thread can set a signal handler; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_container(client: Any, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """kfp.local's ``run_docker_container`` keeping the container until its status is read:
    its log goes to stdout (kfp.local's step log) as it runs, then its exit code; removed
    either way (``containers.run`` pulls the image when the engine lacks it).

    The exit is awaited, not the end of the log: podman's compat API can leave a followed log
    open after a fast container has exited (containers/podman#11461, #6627), and a step that
    failed at once then hung its run (600 s, once in a test run here). Whatever the followed
    log has not printed ``LOG_GRACE_SECONDS`` after the exit is read once, unfollowed.
    """
    container = client.containers.run(
        image=image,
        command=command,
        detach=True,
        stdout=True,
        stderr=True,
        volumes=volumes,
        **run_args,
    )
    try:
        relay = LogRelay(container)
        status = int(container.wait()["StatusCode"])
        relay.finish()
        return status
    finally:
        container.remove(force=True)


LOG_GRACE_SECONDS = 5.0
LOG_THREAD = "step-log"


class LogRelay:
    """Prints a container's log as it comes, from a thread of its own."""

    def __init__(self, container: Any):
        self.container = container
        self.printed = 0  # bytes of the log printed so far
        self._lock = threading.Lock()
        self._taken_over = False  # finish() read the rest: a resumed stream prints nothing more
        self._ended = False  # the followed log reached its end: nothing is left to read
        self._thread = threading.Thread(target=self._follow, name=LOG_THREAD, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for chunk in self.container.logs(stream=True, follow=True):
                with self._lock:
                    if self._taken_over:
                        return
                    print(chunk.decode(errors="replace"), end="")
                    self.printed += len(chunk)
        except Exception:  # noqa: BLE001 - a broken stream: finish() reads the rest
            return
        self._ended = True

    def finish(self) -> None:
        """After the container's exit: the rest of its log, once. The followed log may have
        hung (podman's compat API) or broken off before the end: what it did not print is read
        in one piece, unless the container is gone (removed on SIGTERM); the step's exit
        status, not its log, decides the step."""
        self._thread.join(LOG_GRACE_SECONDS)
        with self._lock:
            self._taken_over = True
            if self._ended:
                return
            try:
                rest = self.container.logs(stream=False, follow=False)[self.printed :]
            except Exception:  # noqa: BLE001 - the container is gone: its log with it
                return
            print(rest.decode(errors="replace"), end="")
