"""The docker runner's containers get what a cluster's step pods get, and nothing that only
this machine's disk holds."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from kubeloop.settings import PlatformSettings
from pipelines import containers
from pipelines.containers import (
    CONTAINER_WORK_DIR,
    NotShareable,
    docker_runner,
    local_problems,
    step_environment,
)

SHARED = {
    "mlflow_tracking_uri": "http://mlflow.kubeloop:5000",
    "feast_registry": "postgresql+psycopg://feast@db/feast",
    "feast_offline_store": "postgresql+psycopg://feast@db/feast",
    "feast_online_store": "redis",
    "dvc_remote": "s3://datasets/dvc",
    "s3_endpoint_url": "http://minio:9000",
    "prediction_log_url": "postgresql+psycopg://server@db/predictions",
}


def test_embedded_defaults_name_every_setting_a_container_cannot_share(tmp_path: Path):
    problems = local_problems(PlatformSettings(work_dir=tmp_path))
    assert [p.split(":")[0] for p in problems] == [
        "MLFLOW_TRACKING_URI",
        "KUBELOOP_FEAST_REGISTRY",
        "KUBELOOP_FEAST_OFFLINE_STORE",
        "KUBELOOP_FEAST_ONLINE_STORE",
        "KUBELOOP_DVC_REMOTE",
        "KUBELOOP_PREDICTION_LOG_URL",
    ]
    with pytest.raises(NotShareable, match="each step its own disk"):
        docker_runner(PlatformSettings(work_dir=tmp_path), tmp_path)


def test_a_step_container_gets_the_pods_variables_and_its_own_work_folder(
    monkeypatch, tmp_path: Path
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("UNRELATED", "x")
    settings = PlatformSettings(
        work_dir=tmp_path, local_runner="docker", docker_run_args={"runtime": "runc"}, **SHARED
    )
    assert local_problems(settings) == []
    env = step_environment(settings)
    assert env["KUBELOOP_WORK_DIR"] == CONTAINER_WORK_DIR != str(tmp_path)
    assert env["AWS_SECRET_ACCESS_KEY"] == "secret" and "UNRELATED" not in env
    assert env["MLFLOW_TRACKING_URI"] == SHARED["mlflow_tracking_uri"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == env["KUBELOOP_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "KUBELOOP_LOCAL_RUNNER" not in env and "KUBELOOP_DOCKER_RUN_ARGS" not in env


def test_the_runner_runs_kfps_command_on_the_host_network(tmp_path: Path):
    root = tmp_path / "kfp"
    root.mkdir()
    settings = PlatformSettings(work_dir=tmp_path, docker_run_args={"runtime": "runc"}, **SHARED)
    args = docker_runner(settings, root).container_run_args
    assert args["network_mode"] == "host" and args["runtime"] == "runc"
    assert args["entrypoint"] == ["env"]  # a pod's command replaces the image's ENTRYPOINT
    assert args["environment"]["KUBELOOP_WORK_DIR"] == CONTAINER_WORK_DIR
    assert root.stat().st_mode & 0o777 == 0o777  # the image's non-root user writes outputs


class HangingLog:
    """A container as podman's compat API can leave one: exited with status 3, its followed
    log stuck open after the first line until ``release``, then going on."""

    def __init__(self) -> None:
        self.removed = False
        self.release = threading.Event()

    def logs(self, *, stream: bool, follow: bool = True):
        if not stream:
            return b"first line\nfailing\n"
        return self._followed()

    def _followed(self):
        yield b"first line\n"
        self.release.wait(10)  # hangs (until the test releases it)
        yield b"failing\n"

    def wait(self) -> dict[str, int]:
        return {"StatusCode": 3}

    def remove(self, force: bool) -> None:
        self.removed = True


def test_a_step_whose_log_hangs_after_it_exited_still_ends_with_its_status_and_whole_log(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    container = HangingLog()
    client = SimpleNamespace(containers=SimpleNamespace(run=lambda **_options: container))
    monkeypatch.setattr(containers, "LOG_GRACE_SECONDS", 0.2)
    try:
        assert containers.run_container(client, "image", ["false"], {}) == 3
    finally:
        container.release.set()  # the followed log resumes after the rest was read without it
    for thread in threading.enumerate():
        if thread.name == containers.LOG_THREAD:
            thread.join(5)
    assert capsys.readouterr().out == "first line\nfailing\n"  # each line once
    assert container.removed


class BrokenLog(HangingLog):
    """A container whose followed log breaks off after the first line (a dropped connection to
    the engine); ``gone`` also removes it before its log can be read again."""

    def __init__(self, gone: bool = False) -> None:
        super().__init__()
        self.gone = gone

    def logs(self, *, stream: bool, follow: bool = True):
        if not stream and self.gone:
            raise ConnectionError("no such container")
        return super().logs(stream=stream, follow=follow)

    def _followed(self):
        yield b"first line\n"
        raise ConnectionError("connection reset by peer")


@pytest.mark.parametrize(
    ("gone", "printed"), [(False, "first line\nfailing\n"), (True, "first line\n")]
)
def test_a_step_whose_followed_log_breaks_prints_the_rest_if_the_container_still_has_it(
    gone: bool, printed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    container = BrokenLog(gone)
    client = SimpleNamespace(containers=SimpleNamespace(run=lambda **_options: container))
    assert containers.run_container(client, "image", ["false"], {}) == 3
    assert capsys.readouterr().out == printed
    assert container.removed
