"""Shared fixtures: an isolated dataset cache and small copies of the shipped sites."""

from __future__ import annotations

import pytest

from edgejoule.sites import get_site
from edgejoule.sites.config import SiteConfig


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test session gets its own dataset cache, so tests never see a user's cache."""
    monkeypatch.setenv("EDGEJOULE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(params=["urban-nlos", "campus-los"])
def small_site(request) -> SiteConfig:
    """A shipped site with fewer samples (same geometry, link budget and positions)."""
    return get_site(request.param).with_overrides(n_samples=400)


@pytest.fixture
def mosquitto():
    """A real mosquitto on a free loopback port (anonymous access), stopped after the test."""
    from tests.brokers import Mosquitto

    broker = Mosquitto().start()
    yield broker
    broker.stop()


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the installed ``edgejoule`` command in a fresh process, as a user would."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "edgejoule"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
