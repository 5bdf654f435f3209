"""The house rules of docs/ARCHITECTURE.md, executable: the import-linter contracts of pyproject.toml.

The tree is linted as a contributor runs the bare ``lint-imports`` in the checkout, on the development install
(strict editable mode: a link tree laid out as a wheel installs; the lenient mode showed grimp core/ alone).
Planted imports go into a copy of the installed layout, assembled from pyproject's ``package-dir`` and put
first on PYTHONPATH, so that no source file is touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
CONFIG = tomllib.loads(PYPROJECT.read_text())
CONTRACTS: dict[str, str] = {c["id"]: c["name"] for c in CONFIG["tool"]["importlinter"]["contracts"]}
STATE = re.compile(r"^(?P<name>.+?) ?(?P<state>KEPT|BROKEN)(?: \(\d+ ignored imports?\))?$", re.MULTILINE)


def assemble(dest: Path) -> Path:
    """``dest/edgejoule`` from core/, ``dest/edgejoule/plugins`` from plugins/, and so on, as installed."""
    package_dir: dict[str, str] = CONFIG["tool"]["setuptools"]["package-dir"]
    for package in sorted(package_dir, key=lambda name: name.count(".")):
        shutil.copytree(ROOT / package_dir[package], dest.joinpath(*package.split(".")), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def lint(tree: Path | None = None) -> tuple[int, str, set[str]]:
    """Exit status, output and the ids of the broken contracts of ``lint-imports`` run on ``tree`` (first on
    PYTHONPATH), or on the development install from the checkout without one."""
    # COLUMNS: rich would wrap a long contract name onto two lines and hide its state from STATE
    env = {**os.environ, "COLUMNS": "250"}
    if tree:
        env["PYTHONPATH"] = str(tree)
    else:
        env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo", str(PYPROJECT)],
        cwd=tree or ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    output = result.stdout + result.stderr
    states = {m["name"]: m["state"] for m in STATE.finditer(output)}
    assert set(states) == set(CONTRACTS.values()), f"not every contract was checked:\n{output}"
    broken = {cid for cid, name in CONTRACTS.items() if states[name] == "BROKEN"}
    return result.returncode, output, broken


@pytest.fixture(scope="module")
def installed_tree(tmp_path_factory) -> Path:
    return assemble(tmp_path_factory.mktemp("installed"))


def test_the_tree_keeps_the_house_rules():
    returncode, output, broken = lint()
    assert returncode == 0 and not broken, output


# what is planted, where; the import chain the report must show; contracts that must break (others may too:
# a core module importing a plugin also closes a cycle, since plugins import core)
PLANTS = {
    "core module imports a plugin": (
        "edgejoule/baselines.py", "from edgejoule.plugins.precoding import zf",
        "edgejoule.baselines -> edgejoule.plugins.precoding.zf", {"core"}),
    "new core module outside the rule": (
        "edgejoule/helpers.py", "ANSWER = 42", "- edgejoule.helpers", {"core"}),
    "package root re-exports a plugin": (
        "edgejoule/__init__.py", "from edgejoule.plugins.precoding.zf import ZeroForcing",
        "edgejoule -> edgejoule.plugins.precoding.zf", {"core-root"}),
    "registry imports the agent": (
        "edgejoule/registry/service.py", "from edgejoule.edge_agent import config",
        "edgejoule.registry.service -> edgejoule.edge_agent.config", {"sides"}),
    "agent imports torch": (
        "edgejoule/edge_agent/agent.py", "import torch", "edgejoule.edge_agent.agent -> torch", {"torch"}),
    "plugin group imports another": (
        "edgejoule/plugins/precoding/zf.py", "from edgejoule.plugins.detection import detectors",
        "edgejoule.plugins.precoding.zf -> edgejoule.plugins.detection.detectors", {"plugin-groups"}),
    "an exception taken backwards": (
        "edgejoule/plugins/quantization/lsq.py", "from edgejoule.plugins.search import pareto",
        "edgejoule.plugins.quantization.lsq -> edgejoule.plugins.search.pareto", {"plugin-groups", "acyclic"}),
    "cycle inside a plugin group": (
        "edgejoule/plugins/precoding/precoder_arch.py", "from edgejoule.plugins.precoding import precoder_cnn",
        ".precoder_arch -> .precoder_cnn", {"acyclic"}),
}


@pytest.mark.parametrize("plant", PLANTS, ids=list(PLANTS))
def test_a_planted_import_breaks_its_contract(installed_tree, tmp_path, plant):
    module, line, chain, expected = PLANTS[plant]
    tree = shutil.copytree(installed_tree, tmp_path / "tree")
    with open(tree / module, "a") as f:
        f.write(f"\n{line}\n")
    returncode, output, broken = lint(tree)
    assert returncode == 1 and expected <= broken, output
    assert chain in output, output
