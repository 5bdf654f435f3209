"""Schema migrations with Alembic; the scripts ship inside the package (registry/migrations).

Every start of the registry (``serve``, the app factory, each of its workers) and ``edgejoule registry migrate``
bring the database to the newest schema under one lock per database, so workers that start together never run
the migrations twice or into each other: the first one migrates, the others wait for it and find the schema
at the head."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, make_url, pool, text

MIGRATIONS = Path(__file__).parent / "migrations"
# the registry's key among PostgreSQL's advisory locks, which are per database; the value is arbitrary
LOCK_KEY = 0x65646A6F756C65
log = logging.getLogger("registry.migrate")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the database at ``url`` to the newest schema, one process at a time; returns the revisions before
    and after (equal when there was nothing to do)."""
    config = alembic_config(url)
    head = ScriptDirectory.from_config(config).get_current_head()
    with migration_lock(url):
        before = _revision(url)
        if before != head:
            command.upgrade(config, "head")
            log.info("migrated the database", extra={"revision_before": before, "revision": head})
    return before, head


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Held by one process at a time for the database at ``url``: PostgreSQL's session-level advisory lock, or
    for SQLite an ``flock`` on the file ``DATABASE.migrate-lock`` beside it. Both end with their holder, so a
    process killed mid-migration leaves no stale lock behind."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        engine = create_engine(parsed, poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:  # closing it ends the session and so releases the lock
                key = {"key": LOCK_KEY}
                _acquire(lambda: connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), key),
                         lambda: connection.execute(text("SELECT pg_advisory_lock(:key)"), key))
                yield
        finally:
            engine.dispose()
    else:
        with open(f"{parsed.database}.migrate-lock", "a") as lock:  # closing the file releases the lock
            _acquire(lambda: _try_flock(lock.fileno()), lambda: fcntl.flock(lock.fileno(), fcntl.LOCK_EX))
            yield


def _acquire(try_lock: Callable[[], bool], wait: Callable[[], object]) -> None:
    if not try_lock():
        log.info("another process is migrating the database: waiting for it")
        wait()


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _revision(url: str) -> str | None:
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
