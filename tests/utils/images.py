"""The kubeloop images, built once per test session: one home for tests/k8s/test_images.py
(the images themselves) and tests/cluster/ (the pipeline with each step in its own container).

- The base is Debian bookworm made here with debootstrap (docker/bookworm-base.sh, cached in
  /var/cache/kubeloop), passed as the Dockerfiles' BASE_IMAGE.
- buildah (--isolation=chroot, layer cache in /var/lib/containers) builds each Dockerfile.
Build times are appended to /var/cache/kubeloop/build-times.log.

The fixtures are imported by the conftest of each folder that uses them. When a session has
tests that need the images, ``start_builds`` (called by tests/conftest.py after collection)
begins building them at once, niced, in a background thread, and those tests run last: the
builds take minutes of a cold CI machine and overlap the rest of the suite instead of
preceding the tests that need them. A failed build fails the tests that wait for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.utils.tools import K8S_INSTALLER, REPO, require_command

CACHE = Path(os.environ.get("KUBELOOP_CACHE", "/var/cache/kubeloop"))
BASE_IMAGE = "localhost/kubeloop/bookworm-python:3.11"
# podman here: runc, and ulimits the machine allows (podman's defaults exceed them), as
# docker-py options (the docker SDK against podman's service, kfp.local's DockerRunner) ...
ENGINE_OPTIONS = {
    "runtime": "runc",
    "ulimits": [
        {"name": "nofile", "soft": 1024, "hard": 1024},
        {"name": "nproc", "soft": 4096, "hard": 4096},
    ],
}
# ... and as ``podman run`` arguments.
RUNTIME = [
    "--runtime",
    ENGINE_OPTIONS["runtime"],
    *(
        part
        for limit in ENGINE_OPTIONS["ulimits"]
        for part in ("--ulimit", f"{limit['name']}={limit['soft']}:{limit['hard']}")
    ),
]
TOOLS = ("debootstrap", "buildah", "podman", "runc")
TARGETS = ("server", "pipeline")


def log_time(what: str, seconds: float) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "build-times.log").open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {what} {seconds:.1f}s\n")


def run(cmd: list[str], timeout: int, **kw) -> subprocess.CompletedProcess:
    """Run a command; fail with its output's tail when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="session")
def container_tools() -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.skip("rootful buildah/podman and debootstrap need root")
    return {name: require_command(name, K8S_INSTALLER, "debian") for name in TOOLS}


@pytest.fixture(scope="session")
def base_image(container_tools: dict[str, str]) -> str:
    return _future("base", _make_base).result()


def build(target: str, base: str) -> str:
    """docker/build.sh with buildah on the debootstrap base, once per session; the image name."""
    return _future(target, lambda: _build(target, base)).result()


def start_builds() -> None:
    """Build the base and every image in a background thread, niced, from now on (only where
    the tools are present: otherwise the fixtures skip or fail as usual)."""
    if os.geteuid() != 0 or not all(shutil.which(name) for name in TOOLS):
        return
    base = _future("base", _make_base)
    for target in TARGETS:
        _future(target, lambda target=target: _build(target, base.result()))


_builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-build")
_futures: dict[str, Future[str]] = {}
_lock = threading.Lock()


def _future(key: str, work) -> Future[str]:
    """The one build of ``key`` this session, queued on the builder thread on first call."""
    with _lock:
        if key not in _futures:
            _futures[key] = _builder.submit(work)
        return _futures[key]


def _make_base() -> str:
    started = time.monotonic()
    proc = run(
        ["nice", "-n", "10", "bash", str(REPO / "docker" / "bookworm-base.sh")],
        timeout=1200,
        env={**os.environ, "BASE_IMAGE": BASE_IMAGE, "KUBELOOP_CACHE": str(CACHE)},
    )
    log_time("bookworm-base", time.monotonic() - started)
    return proc.stdout.strip().splitlines()[-1]


def _build(target: str, base: str) -> str:
    started = time.monotonic()
    proc = run(
        ["nice", "-n", "10", "bash", str(REPO / "docker" / "build.sh"), target],
        timeout=1800,
        cwd=REPO,
        env={
            **os.environ,
            "BUILDER": "buildah",
            "BASE_IMAGE": base,
            "PYTHON": str(Path(sys.executable)),
        },
    )
    log_time(f"build {target}", time.monotonic() - started)
    return proc.stdout.strip().splitlines()[-1]
