"""Real container builds and a real server container, without a Docker engine or a registry.

- The base is Debian bookworm made here with debootstrap (docker/bookworm-base.sh, cached in
  /var/cache/kubeloop), passed as the Dockerfiles' BASE_IMAGE.
- buildah (--isolation=chroot, layer cache in /var/lib/containers) builds each Dockerfile.
- podman (runc, lowered ulimits, read-only root, the chart's UID) starts the server image with a
  champion trained here into a SQLite MLflow store on a host folder mounted at the same path; it
  must answer its readiness probe and the helm test's prediction on 127.0.0.1.
Build times are appended to /var/cache/kubeloop/build-times.log.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.k8s.chart import CHART, REPO
from tests.k8s.conftest import require_command

pytestmark = pytest.mark.slow
CACHE = Path(os.environ.get("KUBELOOP_CACHE", "/var/cache/kubeloop"))
BASE_IMAGE = "localhost/kubeloop/bookworm-python:3.11"
RUNTIME = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
API_TOKEN = "test-token-" + uuid.uuid4().hex[:8]


def _log_time(what: str, seconds: float) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "build-times.log").open("a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {what} {seconds:.1f}s\n")


def _run(cmd: list[str], timeout: int, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="session")
def container_tools() -> dict[str, str]:
    if os.geteuid() != 0:
        pytest.skip("rootful buildah/podman and debootstrap need root")
    return {name: require_command(name)
            for name in ("debootstrap", "buildah", "podman", "runc")}


@pytest.fixture(scope="session")
def base_image(container_tools: dict[str, str]) -> str:
    started = time.monotonic()
    proc = _run(["bash", str(REPO / "docker" / "bookworm-base.sh")], timeout=1200,
                env={**os.environ, "BASE_IMAGE": BASE_IMAGE, "KUBELOOP_CACHE": str(CACHE)})
    _log_time("bookworm-base", time.monotonic() - started)
    return proc.stdout.strip().splitlines()[-1]


_built: dict[str, str] = {}


def build(target: str, base: str) -> str:
    """docker/build.sh with buildah on the debootstrap base; returns the image name."""
    if target not in _built:
        started = time.monotonic()
        proc = _run(["bash", str(REPO / "docker" / "build.sh"), target], timeout=1800,
                    cwd=REPO, env={**os.environ, "BUILDER": "buildah", "BASE_IMAGE": base,
                                   "PYTHON": str(Path(os.sys.executable))})
        _log_time(f"build {target}", time.monotonic() - started)
        _built[target] = proc.stdout.strip().splitlines()[-1]
    return _built[target]


@pytest.mark.parametrize("target", ["server", "pipeline"])
def test_image_builds_runs_as_non_root_with_its_entrypoint(target: str, base_image: str) -> None:
    from components import images

    image = build(target, base_image)
    assert image == {"server": images.SERVER_IMAGE, "pipeline": images.PIPELINE_IMAGE}[target]
    config = json.loads(_run(["podman", "image", "inspect", image], timeout=60).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    module = {"server": "serving", "pipeline": "pipelines.cli"}[target]
    assert config["Entrypoint"] == ["python", "-m", module]
    # The entry point's module imports in the image, as the chart's user, on a read-only root.
    probe = {"server": "import serving.__main__, serving.app",
             "pipeline": "import pipelines.cli, mlflow.cli, feast.cli.cli, monitoring"}[target]
    _run(["podman", "run", "--rm", *RUNTIME, "--network", "none", "--read-only",
          "--tmpfs", "/tmp", "--entrypoint", "python", image, "-c", probe], timeout=300)


def test_pipeline_image_provides_the_charts_commands(base_image: str) -> None:
    image = build("pipeline", base_image)
    commands = (["kubeloop", "--help"], ["mlflow", "server", "--help"],
                ["feast", "serve", "--help"])
    for argv in commands:
        _run(["podman", "run", "--rm", *RUNTIME, "--network", "none", "--read-only",
              "--tmpfs", "/tmp", "--entrypoint", argv[0], image, *argv[1:]], timeout=300)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def champion_store(container_tools: dict[str, str]) -> Iterator[Path]:
    """A SQLite MLflow store with a champion, in a folder the container mounts at the same path
    (artifact URIs are absolute paths)."""
    folder = Path("/var/tmp") / f"kubeloop-podman-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o777)
    script = REPO / "tests" / "k8s" / "train_champion.py"
    try:
        _run([os.sys.executable, str(script), str(folder)], timeout=600, cwd=REPO)
        for path in folder.rglob("*"):  # the container runs as UID 10001
            path.chmod(0o777 if path.is_dir() else 0o666)
        folder.chmod(0o777)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _get(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"}
    request = urllib.request.Request(url, data=body, headers=headers,
                                     method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_server_container_is_ready_and_predicts(base_image: str, champion_store: Path) -> None:
    image = build("server", base_image)
    port = _free_port()
    name = f"kubeloop-server-test-{uuid.uuid4().hex[:8]}"
    # As the chart runs it: its UID, a read-only root with /tmp writable, the token from the
    # environment (a Secret on the cluster). Host networking: this machine has no CNI setup.
    env = {
        "KUBELOOP_ENV": "staging",  # outside dev the token is mandatory
        "KUBELOOP_API_TOKEN": API_TOKEN,
        "KUBELOOP_HOST": "127.0.0.1",
        "KUBELOOP_PORT": str(port),
        "KUBELOOP_WORK_DIR": "/tmp/kubeloop",
        "MLFLOW_TRACKING_URI": f"sqlite:///{champion_store}/mlflow.db",
    }
    cmd = ["podman", "run", "-d", "--name", name, *RUNTIME, "--network", "host", "--read-only",
           "--tmpfs", "/tmp:rw,size=512m", "--user", "10001:10001", "--cap-drop", "ALL",
           "--security-opt", "no-new-privileges",
           "-v", f"{champion_store}:{champion_store}"]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    _run([*cmd, image], timeout=120)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        status: int | str = "no answer"
        while time.monotonic() < deadline:
            try:
                status, _ = _get(f"{base}/health/ready")
            except OSError as exc:
                status = str(exc)
            if status == 200:
                break
            running = _run(["podman", "inspect", "-f", "{{.State.Running}}", name], timeout=30)
            if running.stdout.strip() != "true":
                break
            time.sleep(1)
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True,
                              timeout=30).stdout + subprocess.run(
            ["podman", "logs", name], capture_output=True, text=True, timeout=30).stderr
        assert status == 200, f"/health/ready: {status}\n{logs[-4000:]}"
        assert _get(f"{base}/health/live")[0] == 200
        # The helm test's request (values.yaml tests.request), with the token.
        request = yaml.safe_load((CHART / "values.yaml").read_text())["tests"]["request"]
        status, payload = _get(f"{base}/predict", json.dumps(request).encode())
        assert status == 200, payload[:1000]
        answer = json.loads(payload)
        assert len(answer["predictions"]) == 1
        assert answer["predictions"][0]["model_version"] == "V1.0.0"
        assert answer["predictions"][0]["prediction"] > 0
        # Unguarded calls are refused outside dev.
        request_no_token = urllib.request.Request(f"{base}/predict", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(request_no_token, timeout=10)
        assert excinfo.value.code == 401
        status, metrics = _get(f"{base}/metrics")
        assert status == 200 and b"kubeloop_requests_total" in metrics
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)
