"""A step's exit status as the harness's engine (podman) reports it, read by
``pipelines.containers.run_container`` (kfp.local's own reader counted a fast failure as exit 0:
kubeflow/pipelines#13332)."""

from __future__ import annotations

import pytest

from pipelines.containers import run_container

pytestmark = [pytest.mark.slow]


def test_a_step_that_fails_fast_reads_as_failed_and_leaves_no_container(
    docker_host: str, base_image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import docker

    client = docker.DockerClient(base_url=docker_host)
    options = {
        "runtime": "runc",
        "ulimits": [
            docker.types.Ulimit(name="nofile", soft=1024, hard=1024),
            docker.types.Ulimit(name="nproc", soft=4096, hard=4096),
        ],
        "network_mode": "none",
        "labels": {"kubeloop.test": "exit-status"},
    }
    try:
        failing = ["sh", "-c", "echo failing; exit 3"]
        assert run_container(client, base_image, failing, {}, **options) == 3
        assert "failing" in capsys.readouterr().out  # the step's log, as kfp.local prints it
        assert run_container(client, base_image, ["true"], {}, **options) == 0
        left = client.containers.list(all=True, filters={"label": "kubeloop.test=exit-status"})
        assert left == []
    finally:
        client.close()
