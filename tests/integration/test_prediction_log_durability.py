"""The real server's prediction log on PostgreSQL: nothing answered is lost.

The log database is reached through a TCP proxy the test cuts (every connection closed, new ones
refused) while requests keep coming; once it is restored, every answered request id must be in
the store. Then the server is SIGKILLed mid-load and restarted on the same spool directory: what
it spooled arrives, and what it had only in memory (one flush interval at most) is counted.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from sqlalchemy import create_engine, select

from kubeloop.log_store import predictions
from serving.process import ServerProcess
from tests.utils import services
from tests.utils.serving import Seeded, post_many
from tests.utils.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.slow, pytest.mark.services]

TOKEN = "durability-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def stored_ids(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.scalars(select(predictions.c.request_id)))
    finally:
        engine.dispose()


def answered_ids(answers: list[tuple[int, bytes]]) -> set[str]:
    return {
        p["request_id"]
        for status, body in answers
        if status == 200
        for p in orjson.loads(body)["predictions"]
    }


def wait_stored(url: str, ids: set[str], timeout: float = 90) -> set[str]:
    """The ids still missing from the store after waiting (at most ``timeout``)."""
    end = time.monotonic() + timeout
    missing = ids - stored_ids(url)
    while missing and time.monotonic() < end:
        time.sleep(1)
        missing = ids - stored_ids(url)
    return missing


def start_server(seeded: Seeded, url: str, root: Path, spool: Path) -> ServerProcess:
    env = {
        "KUBELOOP_ENV": "staging",
        "KUBELOOP_API_TOKEN": TOKEN,
        "KUBELOOP_WORK_DIR": str(seeded.work_dir),
        "KUBELOOP_SPEC": str(seeded.spec_path),
        "MLFLOW_TRACKING_URI": seeded.tracking_uri,
        "KUBELOOP_PREDICTION_LOG_URL": url,
        "KUBELOOP_LOG_SPOOL_DIR": str(spool),
        "KUBELOOP_LOG_FLUSH_SECONDS": "0.2",
        "KUBELOOP_REGISTRY_POLL_SECONDS": "30",
    }
    return ServerProcess(env, log_path=root / "server.log").start()


def bodies(seeded: Seeded, n: int) -> list[bytes]:
    return [
        orjson.dumps({"records": [{"entity_id": seeded.entities[i % 40]} for _ in range(5)]})
        for i in range(n)
    ]


def test_outage_then_sigkill_loses_nothing_answered(seeded: Seeded, tmp_path: Path):
    with services.postgres_database() as direct_url, TcpProxy("127.0.0.1", 5432) as proxy:
        base, database = direct_url.rsplit("/", 1)
        via_proxy = f"{base.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}/{database}"
        spool = tmp_path / "spool"
        server = start_server(seeded, via_proxy, tmp_path, spool)
        try:
            warm = asyncio.run(post_many(server.url, "/predict", bodies(seeded, 50), AUTH))
            assert not wait_stored(direct_url, answered_ids(warm))  # the path works

            # 1. The database goes away under load, for a while, then comes back.
            proxy.cut()
            during = asyncio.run(
                post_many(server.url, "/predict", bodies(seeded, 1500), AUTH, concurrency=8)
            )
            assert [s for s, _ in during].count(200) == len(during)  # answering goes on
            time.sleep(3)  # the shipper keeps failing meanwhile; rows wait on disk
            assert answered_ids(during).isdisjoint(stored_ids(direct_url))
            assert any(spool.rglob("seg-*.arrow")), "the rows should wait in the spool"
            proxy.restore()
            assert not wait_stored(direct_url, answered_ids(during))

            # 2. SIGKILL mid-load, with the database down (so the spool holds the rows).
            proxy.cut()
            before_kill = asyncio.run(
                post_many(server.url, "/predict", bodies(seeded, 800), AUTH, concurrency=8)
            )
            time.sleep(0.6)  # longer than a flush interval: every answered row is spooled
            assert server.process is not None
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(10)
        finally:
            server.stop()
        spooled = list(spool.rglob("seg-*.arrow"))
        assert spooled, "the killed server left nothing on the spool"
        proxy.restore()
        restarted = start_server(seeded, via_proxy, tmp_path, spool)
        try:
            assert not wait_stored(direct_url, answered_ids(before_kill))
            end = time.monotonic() + 30
            while time.monotonic() < end and list(spool.rglob("seg-*.arrow")):
                time.sleep(0.5)
            assert not list(spool.rglob("seg-*.arrow")), "the adopted spool was not emptied"
        finally:
            restarted.stop()
        every = answered_ids(warm) | answered_ids(during) | answered_ids(before_kill)
        assert len(every) == (50 + 1500 + 800) * 5
        assert not every - stored_ids(direct_url)
