"""The machine's PostgreSQL and Redis, for tests of the service-backed configuration.

Where they are absent the tests skip with the reason, unless ``KUBELOOP_REQUIRE_SERVICES=1``
(CI), where their absence is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from tests.utils.tools import unavailable

POSTGRES_ADMIN_URL = os.environ.get(
    "KUBELOOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_ADDR = os.environ.get("KUBELOOP_TEST_REDIS", "127.0.0.1:6379")


def _missing(what: str, exc: Exception) -> NoReturn:
    unavailable(f"{what} not reachable ({exc.__class__.__name__}: {exc})")


@contextmanager
def postgres_database() -> Iterator[str]:
    """A throw-away database on the machine's PostgreSQL; yields its SQLAlchemy URL."""
    import psycopg

    name = f"kubeloop_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "absent"
        _missing("PostgreSQL", exc)
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def redis_db(index: int) -> Iterator[str]:
    """A Redis logical database, flushed before and after; yields the Feast connection string."""
    import redis

    host, port = REDIS_ADDR.split(":")
    client = redis.Redis(host=host, port=int(port), db=index, socket_connect_timeout=3)
    try:
        client.flushdb()
    except Exception as exc:  # noqa: BLE001
        _missing("Redis", exc)
    try:
        yield f"{REDIS_ADDR},db={index}"
    finally:
        client.flushdb()
