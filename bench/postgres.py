"""The machine's PostgreSQL for benchmarks: a fresh database per run, by name."""

from __future__ import annotations

import os

ADMIN_URL = os.environ.get("KUBELOOP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def fresh_database(name: str, admin_url: str = ADMIN_URL) -> str:
    """Drop and create database ``name``; returns its SQLAlchemy (psycopg) URL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{name}"
