"""An MLflow tracking server process, as the chart runs it: a PostgreSQL backend store and
artifacts proxied by the server to an S3 bucket (``--artifacts-destination s3://...``), so its
clients (pipeline steps, the model server) need no S3 access of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from serving.process import free_port
from tests.utils.processes import stop, wait_until_answers
from tests.utils.s3 import CREDENTIALS, S3Server


@contextmanager
def mlflow_server(backend_store: str, s3: S3Server, destination: str, log: Path) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1; yields its URL. Output goes to ``log``."""
    port = free_port()
    env = {
        **os.environ,
        **CREDENTIALS,
        "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,
        "MLFLOW_TRACKING_URI": "",
    }
    argv = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        backend_store,
        "--artifacts-destination",
        destination,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        # The first start migrates the database; on a loaded 2-core machine it took minutes.
        wait_until_answers(
            f"{url}/health",
            proc,
            600,
            lambda: f"mlflow server did not start:\n{log.read_text()[-3000:]}",
            poll=0.5,
        )
        yield url
    finally:
        stop(proc)
