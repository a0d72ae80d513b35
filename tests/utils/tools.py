"""External tools the tests run (Debian packages, npm modules), installed on demand.

Each installer script runs at most once per session and part. Where a tool cannot be had, the
test skips with the reason, except under ``KUBELOOP_REQUIRE_SERVICES=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
K8S_INSTALLER = REPO / "tests" / "k8s" / "install_tools.sh"
CRD_DIR = REPO / "tests" / "k8s" / "crd"
_attempts: dict[tuple[str, ...], str] = {}


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("KUBELOOP_REQUIRE_SERVICES") == "1":
        pytest.fail(f"KUBELOOP_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)


def run_installer(script: Path, *args: str) -> str:
    """Run an install script once per session (per arguments); returns how it ended."""
    key = (str(script), *args)
    if key not in _attempts:
        proc = subprocess.run(
            ["bash", str(script), *args], capture_output=True, text=True, timeout=900, check=False
        )
        _attempts[key] = f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    return _attempts[key]


def require_command(name: str, script: Path, *args: str) -> str:
    """Absolute path of a command, installing it with ``script`` when missing."""
    found = shutil.which(name)
    if found is None:
        detail = run_installer(script, *args)
        found = shutil.which(name)
        if found is None:
            unavailable(
                f"`{name}` is missing and {script.relative_to(REPO)} could not install "
                f"it ({detail})"
            )
    return found


def crd_validator() -> list[str]:
    """`node validate.mjs` over the npm prometheus-operator CRD schemas (installed on demand)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is missing (needed for the prometheus-operator CRD validators)")
    if not (CRD_DIR / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        detail = run_installer(K8S_INSTALLER, "npm")
        if not (CRD_DIR / "node_modules" / "@kubernetes-models").is_dir():
            unavailable(f"npm ci of tests/k8s/crd failed ({detail})")
    return [node, str(CRD_DIR / "validate.mjs")]
