"""The dashboard in Debian's headless Chromium against a live registry with a fleet in it: the tables are
filled from the API, the energy, quality and Pareto charts are drawn (pixels in the series colours), and what a
user reads is checked: full model ids in the legends, labelled Pareto points, distinct time ticks, and a hint
where the admin token is when the page has none."""

from __future__ import annotations

import re
import shutil
import subprocess

import httpx
import numpy as np
import pytest

from tests.conftest import wait_for
from tests.fleet import start_registry
from tests.registry_parts import as_agent, package, register, send, upload, window, window_now

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
def fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEJOULE_REGISTRY_ROLLOUT_INTERVAL_S", "0.2")
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
        # beside its DNN, the site's agent ran a classical method and, with nothing assigned, the zf fallback
        for minute, model in ((1, "method:wmmse(tol=0.01)"), (4, "method:wmmse(tol=0.01)"), (7, None), (10, None)):
            send(admin, "/telemetry", window("bs-nlos", model, minute, energy_uj=30.0,
                                             sum_rate=10.5)).raise_for_status()
    yield server
    server.stop()


def test_dashboard_shows_the_fleet_and_draws_its_charts(fleet, tmp_path):
    url = f"{fleet.url}/#token={fleet.admin_token}"
    dom = chromium("--dump-dom", url, profile=tmp_path / "p1").stdout
    assert 'data-loaded="yes"' in dom, dom[-2000:]
    assert "2 agents, 4 models with telemetry, 2 sites" in dom
    for text in ("bs-nlos", "bs-los", "nlos-4bit", "los-8bit", "online", "rapl (measured)"):
        assert text in dom
    assert dom.count('class="pareto"') == 2
    legends = set(re.findall(r'<div class="u-label">([^<]*)</div>', dom))
    for series in ("urban-nlos / nlos-4bit", "urban-nlos / method:wmmse(tol=0.01)",
                   "urban-nlos / zf (classical fallback)"):
        assert series in legends and f"{series} [measured]" in legends, legends  # quality chart, energy chart
    assert {"front: model estimate", "model estimate, off the front", "fleet measurement (meters)"} <= legends
    labels = re.findall(r'<span class="point-label[^"]*"[^>]*>([^<]*)</span>', dom)
    assert sorted(labels) == ["los-8bit", "nlos-16bit", "nlos-4bit", "nlos-fat"]
    ticks = [t.split(", ") for t in re.findall(r'data-x-ticks="([^"]*)"', dom)]
    assert len(ticks) == 2, ticks  # the energy and the sum-rate charts, over the half hour from 00:00 UTC
    for chart in ticks:
        assert len(chart) >= 3 and len(set(chart)) == len(chart) and chart[0].startswith("00:"), chart

    shot = tmp_path / "dashboard.png"
    chromium("--window-size=1300,1500", f"--screenshot={shot}", url, profile=tmp_path / "p2")
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (1500, 1300)
    assert image.std() > 10  # not blank
    assert pixels_near(image, BLUE) > 300  # the first series' lines and the measured points
    assert pixels_near(image, ORANGE) > 300  # the second series
    assert pixels_near(image, RED) > 100  # the Pareto fronts


def test_dashboard_page_is_self_contained(fleet):
    html = httpx.get(fleet.url + "/").text
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    script = httpx.get(fleet.url + "/static/uPlot.iife.min.js?v=1.6.32")  # no token: the page loads it before one
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "max-age=" in script.headers["cache-control"]
    version = re.match(r"/\*! https://github.com/leeoniya/uPlot \(v([0-9.]+)\) \*/", script.text).group(1)
    assert f'src="/static/uPlot.iife.min.js?v={version}"' in html and f"uPlot.min.css?v={version}" in html
    style = httpx.get(fleet.url + "/static/uPlot.min.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert httpx.get(fleet.url + "/static/uPlot.LICENSE.txt").status_code == 404  # only what the page loads


def test_dashboard_without_the_admin_token_says_where_it_is(fleet, tmp_path):
    for url, why in ((f"{fleet.url}/", "needs the registry's admin token"),
                     (f"{fleet.url}/#token=not-the-token", "did not accept this token as the admin token (HTTP 401)")):
        dom = chromium("--dump-dom", url, profile=tmp_path / f"p{len(why)}").stdout
        assert why in dom, dom[-3000:]
        assert '<div id="hint">' in dom and '<main id="fleet" hidden="">' in dom  # no empty tables, no blank charts
        for where in ("EDGEJOULE_REGISTRY_ADMIN_TOKEN", "DATA_DIR/admin-token", "/#token=TOKEN"):
            assert where in dom, where


def test_dashboard_shows_each_rollouts_stage_gate_readings_and_decisions(fleet, tmp_path):
    with fleet.admin() as admin:
        register(admin, "bs-nlos-2")
        admin.post("/deployments", json={"site": "urban-nlos", "model_id": "nlos-4bit"}).raise_for_status()
        started = admin.post("/rollouts", json={"candidate": "nlos-16bit", "site": "urban-nlos", "stages": [0.5, 1],
                                                "min_windows": 3, "min_inferences": 100}).json()
        canary, = started["canaries"]
        other, = set(started["agent_order"]) - {canary}
        for i in range(4):  # the candidate costs 1.5x the incumbent's energy at the same sum rate
            send(admin, "/telemetry", window_now(canary, "nlos-16bit", later_s=i, energy_uj=60.0 + i)).raise_for_status()
            send(admin, "/telemetry", window_now(other, "nlos-4bit", later_s=i, energy_uj=40.0 - i)).raise_for_status()
        wait_for(lambda: admin.get(f"/rollouts/{started['id']}").json()["state"] == "rolled_back", what="the decision")
        # the gate may decide on the third pair of windows or the fourth (they arrive while it looks): the
        # dashboard must show the counts of the look that decided
        look = admin.get(f"/rollouts/{started['id']}").json()["readings"]
        counts = (look["canary"]["windows"], look["incumbent"]["windows"])
        assert all(3 <= c <= 4 for c in counts), counts
    dom = chromium("--dump-dom", f"{fleet.url}/#token={fleet.admin_token}", profile=tmp_path / "p3").stdout
    assert 'data-loaded="yes"' in dom, dom[-2000:]
    for text in ("nlos-16bit", "rolled_back", "1/2 (50%)", canary, "energy&lt;=1: 1.5", "fail",
                 f"windows {counts[0]} vs {counts[1]}",
                 "energy measured", "failed: outside the policy: energy&lt;=1 (ratio 1.5"):
        assert text in dom, text


def test_dashboard_reads_every_page_of_a_fleet_larger_than_a_page(tmp_path):
    """The list answers come 100 rows a page: the page follows each Link, so 101 agents are all shown."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session

    from edgejoule.registry.db import AgentRow

    server = start_registry(tmp_path / "data", None)
    try:
        with Session(create_engine(f"sqlite:///{server.data_dir / 'registry.db'}")) as session:
            session.add_all([AgentRow(id=f"bs-{i:03d}", site="urban-nlos", token_hash="0" * 64) for i in range(101)])
            session.commit()
        dom = chromium("--dump-dom", f"{server.url}/#token={server.admin_token}", profile=tmp_path / "p").stdout
        assert 'data-loaded="yes"' in dom and "101 agents" in dom and "bs-100" in dom, dom[-2000:]
    finally:
        server.stop()
