"""The plugin of docs/PLUGINS.md (examples/mrt-plugin): installed as its own distribution, found through its
entry point and run by the real CLI; and the page still shows its code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgejoule.sites import get_site
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mrt-plugin"
VERBATIM = re.compile(r"<!-- verbatim: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)```\n", re.DOTALL)


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    # built from a copy: building in place would leave build/ and an .egg-info in examples/
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("source") / "mrt-plugin")
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    return target


def test_edgejoule_plugins_lists_it_with_its_source(plugin_path):
    result = run_cli("plugins", "--json", env={"PYTHONPATH": str(plugin_path)})
    assert result.returncode == 0, result.stderr
    mrt = {info["name"]: info for info in json.loads(result.stdout)}["mrt"]
    assert mrt["error"] is None
    assert mrt["source"] == "entry point edgejoule_mrt (edgejoule-mrt 0.1.0)"
    assert mrt["provides"] == {"baselines": ["mrt-example"]} and mrt["hooks"] == ["register_baselines"]


def test_mrt_is_cheapest_and_interference_limited(plugin_path):
    reports = {}
    for method in ("mrt-example", "zf", "wmmse"):
        result = run_cli("baseline", "run", "--site", "urban-nlos", "--method", method, "--limit", "100", "--json",
                         env={"PYTHONPATH": str(plugin_path)})
        assert result.returncode == 0, result.stderr
        reports[method] = json.loads(result.stdout)
    reports["mrt"] = reports.pop("mrt-example")
    rate = {method: report["sum_rate_mean"] for method, report in reports.items()}
    assert 0 < rate["mrt"] < rate["zf"] < rate["wmmse"], rate
    site = get_site("urban-nlos")
    assert reports["mrt"]["macs_mean"] == 4 * site.n_antennas * site.n_users
    assert reports["mrt"]["energy_uj_by_counting"]["paper"] < reports["zf"]["energy_uj_by_counting"]["paper"]


def test_plugins_page_shows_the_example_verbatim():
    shown = {m["path"]: m["code"] for m in VERBATIM.finditer((ROOT / "docs" / "PLUGINS.md").read_text())}
    assert set(shown) == {"examples/mrt-plugin/edgejoule_mrt.py", "examples/mrt-plugin/pyproject.toml"}
    for path, code in shown.items():
        assert code == (ROOT / path).read_text(), f"docs/PLUGINS.md no longer shows {path} as it is"
