"""Who may move a version to production, against a real MLflow server with its own
authentication (``mlflow server --app-name basic-auth``, SQLite stores, 127.0.0.1).

The platform's permissions, as docs/kubernetes.md's table states them: data scientists and
training jobs may register versions of the project's (staging) model and only read the
production model; approvers may edit the production model, so only they can release a version
into it (``registry.release``: ``copy_model_version``) or move its aliases; the approver
recorded is the user MLflow authenticated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from kubeloop import registry
from kubeloop.errors import PromotionError
from serving.process import free_port
from tests.observability import stack

pytestmark = pytest.mark.slow

STAGING, PRODUCTION = "energy", "energy-production"
ADMIN_PASSWORD = "admin-password-for-tests"
USERS = {  # user -> (password, permission on the staging model, on the production model)
    "scientist": ("scientist-password", "EDIT", "READ"),
    "training-job": ("training-job-password", "EDIT", "READ"),
    "approver": ("approver-password", "READ", "EDIT"),
}


@contextmanager
def as_user(name: str, password: str) -> Iterator[None]:
    """MLflow's client reads the credentials from the environment at each request."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = name, password
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow-auth")
    ini = folder / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'auth.db'}\n"
        "admin_username = admin\n"
        f"admin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    port = free_port()
    argv = [
        "env",
        f"MLFLOW_AUTH_CONFIG_PATH={ini}",
        "MLFLOW_FLASK_SERVER_SECRET_KEY=kubeloop-tests-csrf-key",
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--app-name",
        "basic-auth",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = folder / "mlflow.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    service = stack.Service("mlflow", port, process, log)
    try:
        stack.wait_ready(service, "/health", timeout=240)  # a busy 2-core machine: slow imports
        url = service.url
        from mlflow.server import get_app_client

        with as_user("admin", ADMIN_PASSWORD):
            auth = get_app_client("basic-auth", tracking_uri=url)
            client = registry_client(url)
            for model in (STAGING, PRODUCTION):
                client.create_registered_model(model)
            for user, (password, staging, production) in USERS.items():
                auth.create_user(user, password)
                auth.grant_user_permission(user, "registered_model", STAGING, staging)
                auth.grant_user_permission(user, "registered_model", PRODUCTION, production)
        yield url
    finally:
        service.stop()


def registry_client(url: str):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=url, registry_uri=url)


def login(url: str, user: str):
    return as_user(user, USERS[user][0])


def register_staging_version(url: str, user: str = "scientist") -> str:
    with login(url, user):
        version = registry_client(url).create_model_version(
            STAGING, source="s3://kubeloop-artifacts/model", tags={registry.TAG_NAME: "V1.0.0"}
        )
    return str(version.version)


@pytest.mark.parametrize("user", ["scientist", "training-job"])
def test_scientists_and_jobs_register_versions_but_cannot_release_or_move_production(
    mlflow_url: str, user: str
) -> None:
    version = register_staging_version(mlflow_url, user)
    with login(mlflow_url, user):
        client = registry_client(mlflow_url)
        assert registry.authenticated_user(client) == user
        with pytest.raises(PromotionError, match=f"{user} may not release into {PRODUCTION}"):
            registry.release(client, STAGING, version, PRODUCTION, state_tags={})
        with pytest.raises(MlflowException) as refused:
            client.set_registered_model_alias(PRODUCTION, registry.CHAMPION, "1")
        assert refused.value.error_code in ("PERMISSION_DENIED", "RESOURCE_DOES_NOT_EXIST")
        assert not client.search_model_versions(f"name = '{PRODUCTION}'") or all(
            v.tags.get(registry.TAG_APPROVED_BY) != user
            for v in client.search_model_versions(f"name = '{PRODUCTION}'")
        )


def test_an_approver_releases_and_the_authenticated_identity_is_recorded(mlflow_url) -> None:
    version = register_staging_version(mlflow_url)
    with login(mlflow_url, "approver"):
        client = registry_client(mlflow_url)
        released = registry.release(
            client, STAGING, version, PRODUCTION, state_tags={"kubeloop.rollout.state": "approved"}
        )
        assert released.tags[registry.TAG_APPROVED_BY] == "approver"
        assert released.tags[registry.TAG_RELEASED_FROM] == f"{STAGING}/{version}"
        assert released.tags[registry.TAG_NAME] == "V1.0.0"  # the very same version, copied
        assert released.tags["kubeloop.rollout.state"] == "approved"
        assert released.source == f"models:/{STAGING}/{version}"
        challenger = registry.by_alias(client, PRODUCTION, registry.CHALLENGER)
        assert str(challenger.version) == str(released.version)
        # ...and may move the production champion (the end of the production canary).
        registry.promote(client, PRODUCTION, str(released.version), approve=True)
        assert (
            registry.by_alias(client, PRODUCTION, registry.CHAMPION).tags[registry.TAG_APPROVED_BY]
            == "approver"
        )


def test_an_approver_cannot_register_staging_versions(mlflow_url) -> None:
    with login(mlflow_url, "approver"), pytest.raises(MlflowException) as refused:
        registry_client(mlflow_url).create_model_version(STAGING, source="s3://x/model")
    assert refused.value.error_code == "PERMISSION_DENIED"
    # what the CLI prints instead of the client's traceback
    assert "HTTP 403" in registry.refusal(refused.value)


def test_an_approval_is_recorded_as_the_authenticated_user_never_a_name_given(mlflow_url):
    """``kubeloop promote --approver alice`` recorded "alice" whoever ran it."""
    with login(mlflow_url, "approver"):
        client = registry_client(mlflow_url)
        assert registry.recorded_approver(client, None) == "approver"
        assert registry.recorded_approver(client, "approver") == "approver"
        with pytest.raises(PromotionError, match="authenticated you as approver"):
            registry.recorded_approver(client, "alice-the-cto")
    with as_user("approver", "not-the-password"), pytest.raises(MlflowException) as refused:
        registry_client(mlflow_url).search_model_versions(f"name = '{STAGING}'")
    assert "HTTP 401" in registry.refusal(refused.value)


def test_wrong_credentials_are_refused_with_a_clear_error(mlflow_url) -> None:
    with (
        as_user("approver", "not-the-password"),
        pytest.raises(PromotionError, match="credentials"),
    ):
        registry.authenticated_user(registry_client(mlflow_url))


def test_a_registry_without_authentication_names_the_os_user(tmp_path: Path) -> None:
    import getpass

    client = registry_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert registry.authenticated_user(client) is None
    assert registry.approver_identity(client) == getpass.getuser()
    assert registry.recorded_approver(client, None) == getpass.getuser()
    assert registry.recorded_approver(client, "alice") == "alice"  # no login: a name is all


class NoServer:
    """Approval and the step after it touch only the registry; a champion that follows
    production would tell the servers at once (they also follow at their next poll)."""

    def reload(self) -> None:
        pass


def staging_rollout(client, tmp_path: Path):
    """Staging's half of the rollout on this registry (no server or prediction log)."""
    from monitoring.rollout import Rollout
    from tests.utils.factories import example_spec

    spec = example_spec()
    spec = spec.model_copy(
        update={
            "model": spec.model.model_copy(update={"name": STAGING}),
            "rollout": spec.rollout.model_copy(update={"production_model": PRODUCTION}),
        }
    )
    return Rollout(
        client,
        spec,
        NoServer(),  # type: ignore[arg-type]
        None,
        env="staging",
        reports_dir=tmp_path,
        metrics=None,  # type: ignore[arg-type]
        phase="staging",
    )


def test_rollout_approve_with_the_documented_permissions_releases_once(mlflow_url, tmp_path):
    """An approver only reads the project's model, so ``kubeloop rollout approve`` cannot tag
    the staging version: it releases, and staging's controller (EDIT there) marks the version
    released at its next step. A retry never makes a second production copy (it did, and
    ended in a 403 traceback)."""
    champion = register_staging_version(mlflow_url)
    candidate = register_staging_version(mlflow_url)
    with login(mlflow_url, "training-job"):  # the rights of staging's controller
        client = registry_client(mlflow_url)
        registry.promote(client, STAGING, champion, approve=True)
        client.set_registered_model_alias(STAGING, registry.CHALLENGER, candidate)
        client.set_model_version_tag(
            STAGING, candidate, registry.TAG_ROLLOUT_STATE, "awaiting_approval"
        )
    with login(mlflow_url, "approver"):
        rollout = staging_rollout(registry_client(mlflow_url), tmp_path)
        first = rollout.approve()
        again = rollout.approve()
        assert first["state"] == again["state"] == "released"
        assert first["approved_by"] == "approver"
        assert first["released_as"] == again["released_as"]
        copies = [
            v
            for v in registry.all_versions(registry_client(mlflow_url), PRODUCTION)
            if v.tags.get(registry.TAG_RELEASED_FROM) == f"{STAGING}/{candidate}"
        ]
        assert len(copies) == 1
    with login(mlflow_url, "training-job"):
        client = registry_client(mlflow_url)
        step = staging_rollout(client, tmp_path).step()
        assert step.state == "released" and first["released_as"] in step.message
        tags = client.get_model_version(STAGING, candidate).tags
        assert tags[registry.TAG_ROLLOUT_STATE] == "released"
        assert tags["kubeloop.rollout.approved_by"] == "approver"
