"""The registry as a deployment runs it: ``uvicorn --factory`` with its settings from the environment alone,
workers that start together on an empty database (SQLite and PostgreSQL) migrating it once between them, and
``/readyz`` following the database and the broker while ``/healthz`` keeps answering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from edgejoule.registry.migrate import alembic_config, migration_lock
from tests.brokers import free_port
from tests.conftest import wait_for
from tests.fleet import Postgres, start_registry
from tests.postgres import database_url, postgres_server  # noqa: F401 (fixtures)
from tests.registry_parts import as_agent, register

ADMIN_TOKEN = "admin-" + "z" * 20
WAITING = "another process is migrating the database: waiting for it"


@dataclass
class Served:
    url: str
    log: Path
    process: subprocess.Popen

    def get(self, path: str) -> httpx.Response:
        if self.process.poll() is not None:
            raise AssertionError(f"uvicorn exited with {self.process.returncode}:\n{self.log.read_text()}")
        return httpx.get(self.url + path, timeout=5)

    def messages(self) -> list[str]:
        """The registry's own log messages (JSON lines; uvicorn's lines are plain text)."""
        return [json.loads(line)["message"] for line in self.log.read_text().splitlines() if line.startswith("{")]


@contextmanager
def factory(workdir: Path, settings: dict[str, str], workers: int = 1) -> Iterator[Served]:
    """``uvicorn --factory edgejoule.registry.app:app_from_env`` in a fresh process whose only registry settings
    are ``EDGEJOULE_REGISTRY_<NAME>`` variables."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("EDGEJOULE_REGISTRY_")}
    env |= {f"EDGEJOULE_REGISTRY_{name.upper()}": value for name, value in settings.items()}
    log = workdir / f"uvicorn-{port}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "edgejoule.registry.app:app_from_env",
                                    "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                                   cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        yield Served(f"http://127.0.0.1:{port}", log, process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers(served: Served, path: str, status: int) -> bool:
    try:
        return served.get(path).status_code == status
    except httpx.HTTPError:
        return False


def test_uvicorn_factory_serves_from_environment_settings_alone(tmp_path, mosquitto):
    settings = {"data_dir": str(tmp_path / "data"), "admin_token": ADMIN_TOKEN, "broker_url": mosquitto.url}
    with factory(tmp_path, settings) as served:
        wait_for(lambda: _answers(served, "/readyz", 200), what="/readyz 200")
        assert served.get("/readyz").json() == {"status": "ready", "database": True, "mqtt": True}
        assert served.get("/healthz").json() == {"status": "ok", "mqtt": True}
        with httpx.Client(base_url=served.url + "/api/v1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
            token = register(admin, "bs-1")
            assert admin.get("/agents").json()[0]["agent_id"] == "bs-1"
        assert as_agent(served.url, token).get("/agents/bs-1/assignment").status_code == 204
        assert httpx.get(served.url + "/api/v1/agents").status_code == 401
        assert (tmp_path / "data" / "registry.db").exists()  # the SQLite default, in the data dir of the environment
        messages = served.messages()  # JSON logs configured by the factory
    assert messages.count("migrated the database") == 1 and "request" in messages


def test_workers_starting_together_on_an_empty_database_migrate_it_once(tmp_path, database_url):
    """Two workers of one uvicorn start while the migration lock is held (as by a third process migrating): both
    wait for it, nothing is migrated meanwhile, and once it is free exactly one of them migrates."""
    settings = {"data_dir": str(tmp_path / "data"), "admin_token": ADMIN_TOKEN, "database_url": database_url}
    engine = create_engine(database_url)
    held = ExitStack()
    held.enter_context(migration_lock(database_url))
    try:
        with factory(tmp_path, settings, workers=2) as served:
            wait_for(lambda: served.messages().count(WAITING) == 2, what="both workers waiting for the lock")
            assert inspect(engine).get_table_names() == []
            held.close()
            wait_for(lambda: served.log.read_text().count("Application startup complete.") == 2, what="both workers")
            assert served.messages().count("migrated the database") == 1
            assert served.get("/readyz").json() == {"status": "ready", "database": True, "mqtt": None}
    finally:
        held.close()
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    assert revision == ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()


def test_readyz_is_503_while_the_broker_is_gone(tmp_path, mosquitto):
    registry = start_registry(tmp_path / "data", mosquitto.url)
    try:
        wait_for(lambda: httpx.get(registry.url + "/readyz").status_code == 200, what="/readyz 200")
        mosquitto.stop()
        wait_for(lambda: httpx.get(registry.url + "/readyz").status_code == 503, what="/readyz 503")
        assert httpx.get(registry.url + "/readyz").json() == {"status": "unavailable", "database": True, "mqtt": False}
        assert httpx.get(registry.url + "/healthz").json() == {"status": "ok", "mqtt": False}  # alive all the same
        mosquitto.start()
        wait_for(lambda: httpx.get(registry.url + "/readyz").status_code == 200, what="/readyz 200 again")
    finally:
        registry.stop()


def test_readyz_is_503_while_the_database_is_unreachable(tmp_path):
    postgres = Postgres().start()
    registry = start_registry(tmp_path / "data", None, postgres.url)
    try:
        assert httpx.get(registry.url + "/readyz").json() == {"status": "ready", "database": True, "mqtt": None}
        postgres.stop()
        answer = httpx.get(registry.url + "/readyz")
        assert (answer.status_code, answer.json()) == (503, {"status": "unavailable", "database": False, "mqtt": None})
        assert httpx.get(registry.url + "/healthz").status_code == 200
    finally:
        registry.stop()
        if postgres.dir.exists():  # stop() removes it
            postgres.stop()
