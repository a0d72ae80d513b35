"""The data scientists' workspace, as the chart renders it, run on this machine.

The chart's initContainer command clones this repository (its committed ``main``, through a
``file://`` URL standing in for the project's git server) with the tool the image has (dulwich);
the chart's JupyterLab command serves the clone and answers its probe path; then
``notebooks/quickstart.ipynb`` of the clone runs as JupyterLab runs a notebook (the kernel in
``notebooks/``) with the container's ``KFP_HOST``, the KFP gateway (started with its rendered
command) in front of a stub of the KFP API, and submits the training pipeline through it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from nbclient import NotebookClient

from serving.process import free_port
from tests.k8s import chart
from tests.utils.factories import REPO
from tests.utils.kfp_server import kfp_stub
from tests.utils.processes import stop, wait_until_answers

pytestmark = pytest.mark.slow

VALUES = {
    "workspace": {"enabled": True, "repository": {"url": REPO.as_uri(), "ref": "main"}},
    "monitoring": {"kfpHost": "http://ml-pipeline.kubeflow:8888"},
}


def pod_of(name: str) -> dict[str, Any]:
    objects = chart.render(VALUES)
    (deployment,) = [
        o for o in chart.kinds(objects, "Deployment") if o["metadata"]["name"].endswith(name)
    ]
    return deployment["spec"]["template"]["spec"]


def workspace_pod() -> dict[str, Any]:
    return pod_of("workspace")


def plain_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_the_workspace_clones_the_project_serves_jupyterlab_and_submits_to_kfp(
    tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = workspace_pod()
    (clone,) = pod["initContainers"]
    (lab,) = pod["containers"]
    home = tmp_path / "home"
    home.mkdir()
    volume = tmp_path / "workspace"  # the pod's /workspace
    volume.mkdir()
    repo_dir = volume / "project"
    # The image's PATH starts with its virtualenv (dulwich, jupyter): here, this one.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    base = {"PATH": path, "HOME": str(home)}

    # 1. The initContainer's command, as rendered (/workspace is this folder here).
    env = base | plain_env(clone) | {"REPO_DIR": str(repo_dir)}
    subprocess.run(clone["command"], env=env, check=True, timeout=120)
    assert (repo_dir / "notebooks" / "quickstart.ipynb").exists()
    assert (repo_dir / ".git").is_dir()
    # A restart keeps what is there (a kept volume is a person's work).
    (repo_dir / "mine.txt").write_text("work in progress")
    subprocess.run(clone["command"], env=env, check=True, timeout=120)
    assert (repo_dir / "mine.txt").exists()

    # 2. JupyterLab with the rendered command: the clone as its root, answering the probe path.
    port = free_port()
    argv = [
        {
            "--ip=0.0.0.0": "--ip=127.0.0.1",
            "--port=8888": f"--port={port}",
            "--ServerApp.root_dir=/workspace/project": f"--ServerApp.root_dir={repo_dir}",
        }.get(arg, arg)
        for arg in lab["command"]
    ]
    assert argv != lab["command"] and argv[:2] == ["jupyter", "lab"]
    if os.geteuid() == 0:  # the pod runs as UID 10001; this machine's tests may run as root
        argv.append("--allow-root")
    token = "workspace-token"  # workspace.auth.existingSecret on a cluster
    lab_env = base | plain_env(lab) | {"JUPYTER_TOKEN": token}
    probe = lab["readinessProbe"]["httpGet"]["path"]
    log = tmp_path / "jupyterlab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            env=lab_env,
            cwd=lab["workingDir"].replace("/workspace/project", str(repo_dir)),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_answers(url + probe, proc, 120, log.read_text)
            assert httpx.get(url + probe, timeout=10).json()["version"]
            contents = httpx.get(
                url + probe + "/contents/notebooks",
                headers={"Authorization": f"token {token}"},
                timeout=10,
            ).json()
            assert "quickstart.ipynb" in {c["name"] for c in contents["content"]}
            refused = httpx.get(url + probe + "/contents/notebooks", timeout=10)
            assert refused.status_code == 403  # the token guards it
        finally:
            stop(proc)

    # 3. The clone's quickstart, its kernel started in notebooks/ as JupyterLab starts it, with
    # the container's KFP_HOST: the KFP gateway (its rendered command), here in front of a KFP
    # API stub.
    monkeypatch.setenv("HOME", str(home))  # kfp.Client keeps a context file there
    monkeypatch.setenv("KUBELOOP_QUICKSTART_ROWS", "3000")
    notebook = nbformat.read(repo_dir / "notebooks" / "quickstart.ipynb", as_version=4)
    assert plain_env(lab)["KFP_HOST"] == "http://kubeloop-kfp-gateway.kubeflow:8888"
    (gateway,) = pod_of("kfp-gateway")["containers"]
    gateway_port = free_port()
    with kfp_stub() as stub:
        stub.run_state = "SUCCEEDED"  # the notebook waits for the run it submitted
        replaced = {"8888": str(gateway_port), "http://ml-pipeline.kubeflow:8888": stub.host}
        argv = [replaced.get(a, a) for a in gateway["command"]] + ["--host", "127.0.0.1"]
        assert argv[:2] == ["kubeloop", "kfp-gateway"]
        gateway_log = tmp_path / "gateway.log"
        with gateway_log.open("wb") as out:
            proc = subprocess.Popen(argv, env=base, stdout=out, stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{gateway_port}"
                wait_until_answers(url + "/gateway/healthz", proc, 60, gateway_log.read_text)
                monkeypatch.setenv("KFP_HOST", url)
                NotebookClient(
                    notebook,
                    timeout=600,
                    kernel_name="python3",
                    resources={"metadata": {"path": str(repo_dir / "notebooks")}},
                ).execute()
            finally:
                stop(proc)
    outputs = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "submitted run run-1" in outputs
    [run] = stub.posted("/apis/v2beta1/runs")
    assert run["display_name"] == "building-energy-from-notebook"
    assert "pipeline_spec" in run and run["runtime_config"]["parameters"]["spec"]
