"""A step's exit status as the harness's engine (podman) reports it, read by
``pipelines.containers.run_container`` (kfp.local's own reader counted a fast failure as exit 0:
kubeflow/pipelines#13332), and a step's container stopped with a superseded run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.containers import run_container
from tests.utils.images import ENGINE_OPTIONS

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def step_options(label: str) -> dict:
    """A step container as the harness's podman runs it, offline, labelled for clean-up."""
    return {**ENGINE_OPTIONS, "network_mode": "none", "labels": {"kubeloop.test": label}}


def test_a_step_that_fails_fast_reads_as_failed_and_leaves_no_container(
    docker_host: str, base_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import docker

    client = docker.DockerClient(base_url=docker_host)
    options = step_options("exit-status")
    try:
        failing = ["sh", "-c", "echo failing; exit 3"]
        assert run_container(client, base_image, failing, {}, **options) == 3
        assert "failing" in capsys.readouterr().out  # the step's log, as kfp.local prints it
        assert run_container(client, base_image, ["true"], {}, **options) == 0
        left = client.containers.list(all=True, filters={"label": "kubeloop.test=exit-status"})
        assert left == []
    finally:
        client.close()


CHILD = """
import json, sys, docker
from pipelines.containers import removed_on_sigterm, run_container
client = docker.DockerClient(base_url=sys.argv[1])
with removed_on_sigterm():
    run_container(client, sys.argv[2], ["sleep", "300"], {}, **json.loads(sys.argv[3]))
"""


def test_a_superseded_local_run_takes_its_running_step_container_with_it(
    docker_host: str, base_image: str
) -> None:
    """A newer trigger SIGTERMs a local run (``terminate_local``); the step container it was
    waiting on, which the engine runs outside the run's process group, goes with it instead of
    running on beside the newer run."""
    import docker

    client = docker.DockerClient(base_url=docker_host)
    running = {"label": "kubeloop.test=superseded"}
    options = json.dumps(step_options("superseded"))
    run = subprocess.Popen(
        [sys.executable, "-c", CHILD, docker_host, base_image, options],
        cwd=REPO,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not client.containers.list(filters=running):
            assert run.poll() is None and time.monotonic() < deadline, "the step never started"
            time.sleep(0.5)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 128 + signal.SIGTERM
        assert client.containers.list(all=True, filters=running) == []
    finally:
        if run.poll() is None:
            run.kill()
        for left in client.containers.list(all=True, filters=running):
            left.remove(force=True)
        client.close()
