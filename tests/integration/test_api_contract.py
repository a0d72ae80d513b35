"""The served OpenAPI document is a contract the server keeps, checked by fuzzing it.

Schemathesis reads ``/openapi.json`` from the real server (seeded registry, Feast online store,
a token) and sends every operation generated requests, valid and invalid, with every check on:
no server error, every response (errors included) matching its documented schema, status code
and content type; schema-valid requests accepted and schema-violating ones refused. The run
must generate at least 1,000 cases and find nothing.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving.process import ServerProcess
from tests.utils.serving import Seeded

pytestmark = pytest.mark.slow

TOKEN = "contract-token"
ADMIN_TOKEN = "contract-admin-token"
MIN_CASES = 1_000


@pytest.fixture(scope="module")
def seeded(own_seeded: Seeded) -> Seeded:
    """The fuzzer moves canary weights through the admin routes: a store of its own."""
    return own_seeded


@pytest.fixture(scope="module")
def server(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("server-contract")
    env = {
        "KUBELOOP_ENV": "prod",
        "KUBELOOP_WORK_DIR": str(seeded.work_dir),
        "KUBELOOP_SPEC": str(seeded.spec_path),
        "MLFLOW_TRACKING_URI": seeded.tracking_uri,
        "KUBELOOP_API_TOKEN": TOKEN,
        "KUBELOOP_ADMIN_TOKEN": ADMIN_TOKEN,
        "KUBELOOP_PREDICTION_LOG_URL": f"sqlite:///{root / 'predictions.db'}",
    }
    with ServerProcess(env, log_path=root / "server.log", ready_timeout=300) as process:
        yield process


def test_the_server_keeps_its_openapi_contract_under_fuzzing(
    server: ServerProcess, tmp_path: Path
) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    # Each OpenAPI security scheme gets its own token: predict routes and admin routes. The
    # hot routes' bodies must also fit the served model (its feature names, one key per row):
    # rules of the model, not of JSON Schema, so a schema-valid body may get a 422 there.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[auth.openapi.bearer]\nbearer = "{TOKEN}"\n'
        f'[auth.openapi.admin]\nbearer = "{ADMIN_TOKEN}"\n'
        "[[operations]]\n"
        'include-path-regex = "^/(predict|v2/models/.*/infer)$"\n'
        "checks.positive_data_acceptance.expected-statuses = [200, 404, 413, 422]\n"
    )
    proc = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(config),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "100",
            "--seed",
            "20261201",
            "--workers",
            "1",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-12000:]
    generated = re.search(r"(\d+) generated", output)
    assert generated is not None, output[-2000:]
    assert int(generated.group(1)) >= MIN_CASES, output[-2000:]
