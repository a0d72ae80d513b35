"""Fixtures of the observability tests: the Debian tools they run.

prometheus, promtool, prometheus-pushgateway and prometheus-alertmanager come from Debian,
installed by tests/observability/install_tools.sh only when missing. Where a tool cannot be had
the test skips with the reason, except under KUBELOOP_REQUIRE_SERVICES=1 (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

INSTALLER = Path(__file__).resolve().parent / "install_tools.sh"
_installed: list[str] = []


def unavailable(reason: str) -> None:
    if os.environ.get("KUBELOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"KUBELOOP_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def require_command(name: str) -> str:
    """Absolute path of a Debian-provided command, installing the packages once when missing."""
    found = shutil.which(name)
    if found is None:
        if not _installed:
            proc = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True,
                                  timeout=900, check=False)
            _installed.append(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
        found = shutil.which(name)
        if found is None:
            unavailable(f"`{name}` is missing and {INSTALLER.name} could not install it "
                        f"({_installed[0]})")
    assert found is not None
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_command("promtool")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return require_command("prometheus")


@pytest.fixture(scope="session")
def pushgateway_bin() -> str:
    return require_command("prometheus-pushgateway")


@pytest.fixture(scope="session")
def alertmanager_bin() -> str:
    return require_command("prometheus-alertmanager")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_command("amtool")


@pytest.fixture(scope="session")
def crd_validator() -> list[str]:
    """The chart tests' prometheus-operator CRD validator (tests/k8s/crd), installed by their
    tests/k8s/install_tools.sh when missing."""
    repo = INSTALLER.parents[2]
    crd = repo / "tests" / "k8s" / "crd"
    node = shutil.which("node")
    if node is None:
        unavailable("node is missing (needed for the prometheus-operator CRD validators)")
    if not (crd / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        proc = subprocess.run(["bash", str(repo / "tests" / "k8s" / "install_tools.sh"), "npm"],
                              capture_output=True, text=True, timeout=900, check=False)
        if not (crd / "node_modules" / "@kubernetes-models").is_dir():
            unavailable(f"npm ci of tests/k8s/crd failed ({proc.stderr[-2000:]})")
    return [str(node), str(crd / "validate.mjs")]
