"""The dashboard in Debian's headless Chromium against a live registry with a fleet in it: the tables are
filled from the API, and the energy, quality and Pareto charts are drawn (pixels in the series colours)."""

from __future__ import annotations

import shutil
import subprocess

import httpx
import numpy as np
import pytest

from tests.fleet import start_registry
from tests.registry_parts import as_agent, package, register, send, upload, window

BLUE, ORANGE, RED = (0x3A, 0x7B, 0xD5), (0xF5, 0xA6, 0x23), (0xD6, 0x27, 0x28)


def chromium(*args: str, profile) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run ./run setup")
    return subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                           "--virtual-time-budget=8000", *args], capture_output=True, text=True, timeout=120)


def pixels_near(image: np.ndarray, color: tuple[int, int, int], tol: int = 12) -> int:
    return int((np.abs(image.astype(int) - np.array(color)).max(axis=2) <= tol).sum())


@pytest.fixture
def fleet(tmp_path):
    server = start_registry(tmp_path / "data", None)
    with server.admin() as admin:
        upload(admin, *package("nlos-16bit", energy_uj=50.0, sum_rate=11.5))
        upload(admin, *package("nlos-4bit", energy_uj=8.0, sum_rate=11.0))
        upload(admin, *package("nlos-fat", energy_uj=80.0, sum_rate=10.0))
        upload(admin, *package("los-8bit", site="campus-los", energy_uj=12.0, sum_rate=27.0))
        for agent, site, model, base_uj in (("bs-nlos", "urban-nlos", "nlos-4bit", 40),
                                            ("bs-los", "campus-los", "los-8bit", 90)):
            token = register(admin, agent, site)
            admin.post("/deployments", json={"site": site, "model_id": model}).raise_for_status()
            as_agent(server.url, token).post(f"/agents/{agent}/heartbeat", json={
                "agent_id": agent, "site": site, "current_model_id": model, "runtime": "ai-edge-litert 2.3.0"})
            for minute in range(0, 30, 3):
                send(admin, "/telemetry", window(agent, model, minute, energy_uj=base_uj - minute, site=site,
                                                 sum_rate=11 + minute / 30)).raise_for_status()
    yield server
    server.stop()


def test_dashboard_shows_the_fleet_and_draws_its_charts(fleet, tmp_path):
    url = f"{fleet.url}/#token={fleet.admin_token}"
    dom = chromium("--dump-dom", url, profile=tmp_path / "p1").stdout
    assert 'data-loaded="yes"' in dom, dom[-2000:]
    assert "2 agents, 2 models with telemetry, 2 sites" in dom
    for text in ("bs-nlos", "bs-los", "nlos-4bit", "los-8bit", "online", "rapl (measured)"):
        assert text in dom
    assert dom.count('class="pareto"') == 2

    shot = tmp_path / "dashboard.png"
    chromium("--window-size=1300,1500", f"--screenshot={shot}", url, profile=tmp_path / "p2")
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (1500, 1300)
    assert image.std() > 10  # not blank
    assert pixels_near(image, BLUE) > 300  # the first series' lines and the measured squares
    assert pixels_near(image, ORANGE) > 300  # the second series
    assert pixels_near(image, RED) > 100  # the Pareto fronts


def test_dashboard_page_is_self_contained(fleet):
    html = httpx.get(fleet.url + "/").text
    assert "<canvas" in html and "http://" not in html and "https://" not in html  # nothing from a CDN
