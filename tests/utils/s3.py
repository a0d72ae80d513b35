"""An S3-compatible server for tests: moto's ``moto_server`` as a process on 127.0.0.1.

MinIO cannot be installed here; moto implements the S3 REST API and is what DVC's and MLflow's
own tests use. It is a real HTTP server, so boto3, s3fs (pandas, DVC) and MLflow's artifact
proxy reach it through their ordinary endpoint settings, from the host or a container on the
host network.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from serving.process import free_port
from tests.utils.processes import stop, wait_until_answers
from tests.utils.tools import unavailable

# moto accepts any credentials; these are what every client of the test server gets.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key under ``prefix`` (paginated)."""
        pages = (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@contextmanager
def s3_server(*buckets: str) -> Iterator[S3Server]:
    """``moto_server`` on a free port with ``buckets`` created; stopped on exit."""
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        unavailable("moto_server is missing from the virtualenv (moto[server] in uv.lock)")
    port = free_port()
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = S3Server(f"http://127.0.0.1:{port}")
    try:
        wait_until_answers(
            f"{server.endpoint}/moto-api/",
            proc,
            30,
            lambda: f"moto_server did not start on port {port}",
        )
        for bucket in buckets:
            server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        stop(proc, grace=10)
