"""Fixtures of the observability tests: the Debian tools they run.

prometheus, promtool, prometheus-pushgateway and prometheus-alertmanager come from Debian,
installed by tests/observability/install_tools.sh only when missing. Where a tool cannot be had
the test skips with the reason, except under KUBELOOP_REQUIRE_SERVICES=1 (CI), where it fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.utils import tools

INSTALLER = Path(__file__).resolve().parent / "install_tools.sh"


def require_command(name: str) -> str:
    """Absolute path of a Debian-provided command, installing the packages once when missing."""
    return tools.require_command(name, INSTALLER)


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
    """The chart tests' prometheus-operator CRD validator (tests/k8s/crd)."""
    return tools.crd_validator()
