"""docs/your-project.md is executed as written: every ``bash`` block, in order, in one shell.

A guide whose commands drift from the product misleads exactly the users it is for, so its
commands are the test: an empty folder, the project's ``kubeloop`` on the PATH, a free port,
``set -euo pipefail``. The checks after the run read what the commands left behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from serving.process import REPO, free_port

pytestmark = pytest.mark.slow

GUIDE = REPO / "docs" / "your-project.md"


def guide_script() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE.read_text(), re.S)
    # The guide stops its server at the end; the trap also does when a command fails.
    return "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + "\n".join(
        blocks
    )


def test_the_guide_runs_from_a_csv_to_predictions_monitoring_and_a_new_version(
    tmp_path: Path,
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KUBELOOP_", "MLFLOW_", "KFP_")) or k == "KUBELOOP_REQUIRE_SERVICES"
    }
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env['PATH']}"
    env["PORT"] = str(free_port())
    proc = subprocess.run(
        ["bash", "-c", guide_script()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1_500,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert "Traceback" not in output
    answer = json.loads((tmp_path / "by-id.json").read_text())
    assert answer["predictions"][0]["model_version"] == "V1.0.0"
    assert "registered diabetes V1.0.1" in output  # the second training: next auto revision
    assert "registered wine V1.0.0" in output  # classification from a string label
    reports = list((tmp_path / ".kubeloop" / "reports" / "diabetes").glob("monitor-*.html"))
    assert reports and "kubeloop-summary" in reports[0].read_text()
