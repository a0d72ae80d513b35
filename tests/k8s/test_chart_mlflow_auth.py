"""The chart's MLflow authenticates: the tracking server the chart renders, started here as the
container would run it, refuses a client without a user, and each kubeloop client signs in as
its own user. Who may do what once signed in is tests/integration/test_release_permissions.py."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from serving.process import free_port
from tests.k8s.chart import containers, one, render
from tests.utils.processes import stop, wait_until_answers

ADMIN_PASSWORD = "chart-admin-password-1"
AUTH = {"existingSecret": "mlflow-auth"}
CLIENTS = {"server": "mlflow-server", "jobs": "mlflow-jobs", "rollout": "mlflow-rollout"}
LOG = {"existingSecret": "log-db"}
VALUES = {
    "mlflow": {"auth": AUTH, "clientCredentials": CLIENTS},
    "server": {
        "auth": {"existingSecret": "api", "adminExistingSecret": "admin"},
        "predictionLog": LOG,
    },
    "rollout": {"enabled": True},
}


def secret_env(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Variables from Secrets: name -> (Secret, key)."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_every_kubeloop_client_signs_in_as_its_own_user() -> None:
    objects = render(VALUES)
    signed_in = {}
    for owner, container in containers(objects):
        env = secret_env(container)
        if "MLFLOW_TRACKING_USERNAME" in env:
            user, password = env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
            assert (user[1], password[1]) == ("username", "password")
            assert user[0] == password[0]
            signed_in[owner["metadata"]["name"]] = user[0]
    assert signed_in == {
        "kubeloop-server": CLIENTS["server"],
        "kubeloop-monitor": CLIENTS["jobs"],
        "kubeloop-rollout": CLIENTS["rollout"],
    }


@pytest.mark.parametrize(
    ("values", "key"),
    [
        (
            {"mlflow": {"clientCredentials": {**CLIENTS, "rollout": ""}}},
            "clientCredentials.rollout",
        ),
        ({"mlflow": {"clientCredentials": {**CLIENTS, "server": ""}}}, "clientCredentials.server"),
    ],
)
def test_a_client_without_a_user_of_an_authenticating_registry_fails_the_install(
    values: dict, key: str
) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmRenderError, match=key):
        render({**VALUES, "mlflow": {**VALUES["mlflow"], **values["mlflow"]}})


def request(url: str, user: str | None = None, password: str | None = None) -> int:
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_the_rendered_tracking_server_refuses_a_client_without_a_user(tmp_path: Path) -> None:
    """The Deployment's command, arguments, environment and Secret volume, run as a process:
    the container's paths under ``tmp_path``, its port a free one on 127.0.0.1."""
    secrets = {
        AUTH["existingSecret"]: {
            "basic_auth.ini": (
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = sqlite:///{tmp_path}/auth.db\n"
                "admin_username = admin\n"
                f"admin_password = {ADMIN_PASSWORD}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            ),
            "flask-secret-key": "chart-test-flask-key",
        }
    }
    deployment = one(render(VALUES), "Deployment", "kubeloop-mlflow")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]

    def local(path: str) -> str:
        return path.replace("/tmp", str(tmp_path / "tmp")).replace("/etc", str(tmp_path / "etc"))

    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    for volume in pod["volumes"]:
        if "secret" in volume:
            for item in volume["secret"]["items"]:
                path = Path(local(mounts[volume["name"]])) / item["path"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(secrets[volume["secret"]["secretName"]][item["key"]])
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = local(variable["value"])
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            env[variable["name"]] = secrets[ref["name"]][ref["key"]]
    port = free_port()
    args = [local(a).replace("--host=0.0.0.0", "--host=127.0.0.1") for a in container["args"]]
    args = [f"--port={port}" if a.startswith("--port=") else a for a in args]
    assert "--app-name=basic-auth" in args
    command = [
        str(Path(sys.executable).with_name(container["command"][0])),
        *container["command"][1:],
    ]
    log = tmp_path / "mlflow.log"
    with log.open("w") as out:
        proc = subprocess.Popen([*command, *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/health", proc, 300, lambda: log.read_text()[-3000:], poll=0.5)
        search = f"{url}/api/2.0/mlflow/registered-models/search"
        assert request(f"{url}/health") == 200  # the probes need no user
        assert request(search) == 401
        assert request(search, "admin", "wrong") == 401
        assert request(search, "admin", ADMIN_PASSWORD) == 200
    finally:
        stop(proc)
