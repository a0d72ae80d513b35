"""Real container builds and a real server container, without a Docker engine or a registry.

- The images are built once per session on a debootstrap base (tests/utils/images.py, shared
  with tests/cluster/).
- podman (runc, lowered ulimits, read-only root, the chart's UID) starts the server image with a
  champion trained here into a SQLite MLflow store on a host folder mounted at the same path; it
  must answer its readiness probe and the helm test's prediction on 127.0.0.1.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from serving.process import free_port
from tests.k8s import chart
from tests.k8s.chart import CHART, REPO
from tests.utils.images import RUNTIME, build, run

# Cold builds take minutes on two cores: a longer limit than the suite's default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
API_TOKEN = "test-token-" + uuid.uuid4().hex[:8]


@pytest.mark.parametrize("target", ["server", "pipeline"])
def test_image_builds_runs_as_non_root_with_its_entrypoint(target: str, base_image: str) -> None:
    from kubeloop import images

    image = build(target, base_image)
    assert image == {"server": images.SERVER_IMAGE, "pipeline": images.PIPELINE_IMAGE}[target]
    config = json.loads(run(["podman", "image", "inspect", image], timeout=60).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    module = {"server": "serving", "pipeline": "kubeloop"}[target]
    assert config["Entrypoint"] == ["python", "-m", module]
    # The entry point's module imports in the image, as the chart's user, on a read-only root.
    probe = {
        "server": "import serving.__main__, serving.app",
        "pipeline": "import kubeloop.cli.main, mlflow.cli, feast.cli.cli, monitoring",
    }[target]
    run_sealed(image, "python", "-c", probe, timeout=300)


def run_sealed(image: str, entrypoint: str, *args: str, timeout: int) -> None:
    """``entrypoint args`` in ``image`` as the chart runs it: no network, a read-only root,
    ``/tmp`` in memory."""
    run(
        [
            "podman",
            "run",
            "--rm",
            *RUNTIME,
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--entrypoint",
            entrypoint,
            image,
            *args,
        ],
        timeout=timeout,
    )


def charts_commands() -> list[list[str]]:
    """Each command the chart runs in the pipeline image, up to its first option (so
    ``kubeloop trigger new-data``, ``kubeloop kfp-gateway``, ``mlflow server``), with every
    optional workload and trigger switched on: a command the chart gains is checked here too."""
    values = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
    values["pipelines"] = {"schedule": {"enabled": True}, "newData": {"enabled": True}}
    values["monitoring"]["kfpHost"] = "http://ml-pipeline.kubeflow:8888"
    found = []
    for _, container in chart.containers(chart.render(values)):
        argv = [*container.get("command", []), *container.get("args", [])]
        if "kubeloop-python:" not in container["image"] or argv[0] in ("sh", "python"):
            continue
        if argv[:2] == ["feast", "--chdir"]:  # feast --chdir <repo> serve
            argv = [argv[0], *argv[3:]]
        command = list(itertools.takewhile(lambda a: not a.startswith("-"), argv))
        if command not in found:
            found.append(command)
    return found


def test_pipeline_image_provides_the_charts_commands(base_image: str) -> None:
    commands = charts_commands()
    for expected in (["kubeloop", "trigger", "schedule"], ["kubeloop", "kfp-gateway"]):
        assert expected in commands, commands
    image = build("pipeline", base_image)
    # One container answers every command's --help (a container per command costs a start each).
    script = " && ".join(
        f"echo {shlex.quote(' '.join(c))} && {shlex.join([*c, '--help'])} >/dev/null"
        for c in commands
    )
    run_sealed(image, "sh", "-ec", script, timeout=600)


@pytest.fixture
def champion_store(container_tools: dict[str, str]) -> Iterator[Path]:
    """A SQLite MLflow store with a champion, in a folder the container mounts at the same path
    (artifact URIs are absolute paths)."""
    folder = Path("/var/tmp") / f"kubeloop-podman-{uuid.uuid4().hex[:8]}"
    folder.mkdir(mode=0o777)
    script = REPO / "tests" / "k8s" / "train_champion.py"
    try:
        run([os.sys.executable, str(script), str(folder)], timeout=600, cwd=REPO)
        for path in folder.rglob("*"):  # the container runs as UID 10001
            path.chmod(0o777 if path.is_dir() else 0o666)
        folder.chmod(0o777)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _get(url: str, body: bytes | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_TOKEN}"}
    request = urllib.request.Request(
        url, data=body, headers=headers, method="POST" if body else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_server_container_is_ready_and_predicts(
    base_image: str, champion_store: Path, tmp_path: Path
) -> None:
    image = build("server", base_image)
    port = free_port()
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
    # python -m serving, the image's ENTRYPOINT, as the chart runs it.
    _start(image, name, ["python", "-m", "serving"], env, [f"{champion_store}:{champion_store}"])
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
            running = run(["podman", "inspect", "-f", "{{.State.Running}}", name], timeout=30)
            if running.stdout.strip() != "true":
                break
            time.sleep(1)
        logs = (
            subprocess.run(
                ["podman", "logs", name], capture_output=True, text=True, timeout=30
            ).stdout
            + subprocess.run(
                ["podman", "logs", name], capture_output=True, text=True, timeout=30
            ).stderr
        )
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
        # The helm test's own script, as its pod runs it (script and request side by side).
        smoke = tmp_path / "smoke"
        smoke.mkdir()
        shutil.copy(CHART / "files" / "smoke_test.py", smoke / "smoke_test.py")
        (smoke / "request.json").write_text(json.dumps(request))
        proc = subprocess.run(
            [os.sys.executable, str(smoke / "smoke_test.py"), base],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
            env={**os.environ, "KUBELOOP_API_TOKEN": API_TOKEN},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "ok: POST /predict" in proc.stdout
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)


def _chart_container(objects: list[dict], name: str) -> tuple[dict, dict]:
    from tests.k8s.chart import pod_specs

    for _owner, spec in pod_specs(objects):
        for container in spec["containers"]:
            if container["name"] == name:
                return container, spec
    raise AssertionError(name)


def _argv_on(container: dict, port: int) -> list[str]:
    """The chart's command and args, listening on 127.0.0.1:port instead of 0.0.0.0:<port>."""
    argv = [*container["command"], *container.get("args", [])]
    out = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg.startswith(("--host=", "--port=")):
            continue
        if arg in ("--host", "--port", "-h", "-p") and i + 1 < len(argv):
            skip = True
            continue
        out.append(arg)
    return [*out, "--host", "127.0.0.1", "--port", str(port)]


def _wait_http(
    url: str, name: str, headers: dict[str, str] | None = None, timeout: float = 180
) -> int:
    deadline = time.monotonic() + timeout
    status: int | str = "no answer"
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError as exc:
            status = str(exc)
        running = subprocess.run(
            ["podman", "inspect", "-f", "{{.State.Running}}", name],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        if running != "true":
            break
        time.sleep(1)
    logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, timeout=30)
    raise AssertionError(f"{url}: {status}\n{(logs.stdout + logs.stderr)[-4000:]}")


def _start(image: str, name: str, argv: list[str], env: dict[str, str], mounts: list[str]) -> None:
    cmd = [
        "podman",
        "run",
        "-d",
        "--name",
        name,
        *RUNTIME,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp:rw,size=512m",
        "--user",
        "10001:10001",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--entrypoint",
        argv[0],
    ]
    for mount in mounts:
        cmd += ["-v", mount]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    run([*cmd, image, *argv[1:]], timeout=120)


def test_pipeline_image_runs_the_charts_mlflow_and_feast_servers(
    base_image: str, tmp_path: Path
) -> None:
    """The chart's MLflow and Feast containers, as rendered, start from the image and answer."""
    from tests.k8s.chart import render
    from tests.utils import services

    image = build("pipeline", base_image)
    objects = render(
        {
            "featureStore": {
                "enabled": True,
                "registry": {"existingSecret": "r"},
                "redis": {"existingSecret": "s"},
            }
        }
    )
    names = []
    try:
        # MLflow: the chart's args (SQLite store on /tmp without a backend Secret).
        mlflow, _ = _chart_container(objects, "mlflow")
        port = free_port()
        env = {e["name"]: e["value"] for e in mlflow["env"] if "value" in e}
        name = f"kubeloop-mlflow-test-{uuid.uuid4().hex[:8]}"
        names.append(name)
        _start(image, name, _argv_on(mlflow, port), env, [])
        assert _wait_http(f"http://127.0.0.1:{port}/health", name) == 200
        api = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        # Requests through the Service name pass MLflow's host check; others do not.
        assert _wait_http(api, name, {"Host": f"kubeloop-mlflow:{port}"}) == 200
        assert _wait_http(api, name, {"Host": "attacker.example.com"}) in (400, 403)

        # Feast: the chart's feature_store.yaml, read-only, with the registry and Redis from the
        # environment (here the machine's PostgreSQL and Redis instead of the Secrets).
        feast, _ = _chart_container(objects, "feast")
        config = next(
            o
            for o in objects
            if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kubeloop-feast"
        )
        folder = tmp_path / "feast"
        folder.mkdir()
        (folder / "feature_store.yaml").write_text(config["data"]["feature_store.yaml"])
        folder.chmod(0o755)
        with services.postgres_database() as registry, services.redis_db(9) as redis_url:
            port = free_port()
            name = f"kubeloop-feast-test-{uuid.uuid4().hex[:8]}"
            names.append(name)
            _start(
                image,
                name,
                _argv_on(feast, port),
                {"KUBELOOP_FEAST_REGISTRY": registry, "KUBELOOP_REDIS_URL": redis_url},
                [f"{folder}:/etc/feast:ro"],
            )
            assert _wait_http(f"http://127.0.0.1:{port}/health", name) == 200
    finally:
        for name in names:
            subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)
