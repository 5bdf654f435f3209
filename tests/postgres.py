"""One real PostgreSQL 15 server for the registry tests (started once per test run, REFERENCE.md section 7),
and a fresh database in it for each test that asks."""

from __future__ import annotations

import uuid

import pytest

from tests.fleet import Postgres


@pytest.fixture(scope="session")
def postgres_server():
    server = Postgres().start()
    yield server
    server.stop()


def fresh_database(server: Postgres) -> str:
    """A new, empty database on ``server``; returns its SQLAlchemy URL."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The registry's database on each backend: SQLite (WAL) in a temporary directory, or PostgreSQL 15."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return fresh_database(request.getfixturevalue("postgres_server"))
