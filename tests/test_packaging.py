"""The distribution as a user installs it: one top-level package, ``edgejoule``, holding every file of core/,
plugins/, registry/ and edge_agent/ where ``package-dir`` puts it, and importable from the wheel alone.

pyproject lists its packages explicitly (a folder mapped by ``package-dir`` is not discovered), so a new
folder left out of the list would be silently missing from the wheel; these tests are what notices.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIR: dict[str, str] = CONFIG["tool"]["setuptools"]["package-dir"]
# The install profiles, each with its constraints file (constraints/refresh.sh); constraints/all.txt is the full,
# tested environment that ./run installs, the only one holding the convert toolchain and its caps.
CONSTRAINTS = ROOT / "constraints"
PROFILES = ("edge", "registry", "train")


def source_files() -> dict[str, Path]:
    """The repository's files in the mapped folders, by their path in the wheel (``edgejoule/plugins/...``)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z",
                             *PACKAGE_DIR.values()], cwd=ROOT, capture_output=True, text=True, check=True)
    files = {}
    for name in filter(None, listed.stdout.split("\0")):
        path = ROOT / name
        if not path.is_file():  # deleted in the work tree, not yet in the index
            continue
        # the deepest mapped folder holding the file names its package (plugins/ sits inside edgejoule)
        package, folder = max(((p, f) for p, f in PACKAGE_DIR.items() if path.is_relative_to(ROOT / f)),
                              key=lambda item: len(item[1]))
        files["/".join([*package.split("."), *path.relative_to(ROOT / folder).parts])] = path
    return files


def test_packages_list_names_every_folder_with_python():
    folders = {name.rpartition("/")[0].replace("/", ".") for name in source_files() if name.endswith(".py")}
    listed = set(CONFIG["tool"]["setuptools"]["packages"])
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - folders == set(), "these packages in pyproject.toml have no folder"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of exactly the repository's files: a stale build/ cannot stand in."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for path in source_files().values():
        target = src / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    dist = tmp_path_factory.mktemp("dist")
    # pip rather than python -m build: build --no-isolation insists on the `wheel` package, which
    # setuptools >= 70.1 no longer needs
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(dist), str(src)], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (built,) = dist.glob("edgejoule-*.whl")
    return built


def test_wheel_holds_one_package_with_every_file(wheel):
    names = [n for n in zipfile.ZipFile(wheel).namelist() if not n.endswith("/")]
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"edgejoule"}
    assert len(tops) == 2, tops
    packaged = {n for n in names if n.startswith("edgejoule/")}
    expected = set(source_files())
    assert expected - packaged == set(), "missing from the wheel"
    assert packaged - expected == set(), "in the wheel but not in the repository"
    # the files a test of the editable install would never miss: not Python, or in a folder without __init__.py
    assert {"edgejoule/registry/dashboard.html", "edgejoule/registry/static/uPlot.iife.min.js",
            "edgejoule/registry/static/uPlot.min.css", "edgejoule/registry/static/uPlot.LICENSE.txt",
            "edgejoule/registry/migrations/script.py.mako",
            "edgejoule/registry/migrations/versions/0001_initial_schema.py"} <= packaged


def test_the_wheel_alone_imports_and_migrates(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300,
                   env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    # The editable finder of the development install stays on sys.meta_path, after the path finder: a module
    # missing from the wheel would quietly load from the repository, hence every module's file is checked.
    code = """
import json, sys
import edgejoule, edgejoule.plugins.precoding.zf, edgejoule.registry.migrate, edgejoule.edge_agent.cli
from edgejoule import hookimpl
before, head = edgejoule.registry.migrate.upgrade(f"sqlite:///{sys.argv[1]}/registry.db")
files = {n: m.__file__ for n, m in sys.modules.items() if n.split(".")[0] == "edgejoule"}
print(json.dumps({"project": hookimpl.project_name, "before": before, "head": head, "files": files}))
"""
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=target, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(target)})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["project"] == "edgejoule"
    outside = {n: f for n, f in report["files"].items() if not Path(f).is_relative_to(target)}
    assert not outside, "loaded from outside the installed wheel"
    assert {"edgejoule.plugins.precoding.zf", "edgejoule.registry.migrate", "edgejoule.edge_agent.cli"} <= set(
        report["files"])
    newest = sorted((ROOT / PACKAGE_DIR["edgejoule.registry"] / "migrations" / "versions").glob("*.py"))[-1]
    # revision files are named after their revision id (0006_telemetry_series.py: "0006")
    assert report["before"] is None and report["head"] == newest.name.partition("_")[0]


def test_editable_install_maps_each_package_to_its_folder():
    # strict mode: the package's files are links, in build/, to the files of its folder
    for package, folder in PACKAGE_DIR.items():
        assert Path(importlib.import_module(package).__file__).resolve().parent == ROOT / folder, package


def profile_venv(wheel: Path, venv: Path, profile: str) -> dict[str, str]:
    """``pip install -c constraints/PROFILE.txt "edgejoule[PROFILE]"`` as the README gives it, from the wheel into a
    fresh venv (pip's cache makes the second run quick); returns the environment to run its commands with."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    install = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", "-c",
                              str(CONSTRAINTS / f"{profile}.txt"), f"{wheel}[{profile}]"],
                             capture_output=True, text=True, timeout=600, env=env)
    assert install.returncode == 0, install.stderr[-2000:]
    return env


def pins(profile: str) -> dict[str, str]:
    """A constraints file's pins, by canonical name (``typing_extensions`` and ``typing-extensions`` are one)."""
    found = {}
    for line in (CONSTRAINTS / f"{profile}.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return found


def test_the_edge_install_runs_the_agent_without_torch(wheel, tmp_path):
    """The `edge` profile with its constraints: the agent and the CLI start, the classical baselines load, and
    torch is nowhere in the environment."""
    venv = tmp_path / "edge-venv"
    env = profile_venv(wheel, venv, "edge")
    assert subprocess.run([venv / "bin" / "edge-agent", "--help"], capture_output=True, timeout=60,
                          cwd=tmp_path, env=env).returncode == 0
    listed = subprocess.run([venv / "bin" / "edgejoule", "plugins", "--json"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)}
    assert plugins["zf"]["error"] is None and plugins["wmmse"]["error"] is None
    missing = subprocess.run([venv / "bin" / "python", "-c", "import importlib.util as u; "
                              "print(u.find_spec('torch') is None, u.find_spec('fastapi') is None)"],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert missing.stdout.split() == ["True", "True"], missing.stderr


def test_the_registry_install_gets_the_current_pydantic(wheel, tmp_path):
    """The `registry` profile with its constraints: the service's CLI and app load, without torch, and the convert
    toolchain's caps (typing-extensions < 4.13, hence pydantic 2.11) do not reach it."""
    venv = tmp_path / "registry-venv"
    env = profile_venv(wheel, venv, "registry")
    cli = subprocess.run([venv / "bin" / "edgejoule", "registry", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env)
    assert cli.returncode == 0 and "serve" in cli.stdout, cli.stderr
    code = ("import importlib.util as u, json, pydantic, typing_extensions, importlib.metadata as m, "
            "edgejoule.registry.app; print(json.dumps({'pydantic': pydantic.VERSION, "
            "'typing_extensions': m.version('typing_extensions'), 'torch': u.find_spec('torch') is not None, "
            "'litert_torch': u.find_spec('litert_torch') is not None}))")
    probe = subprocess.run([venv / "bin" / "python", "-c", code], capture_output=True, text=True, timeout=120,
                           cwd=tmp_path, env=env)
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert not found["torch"] and not found["litert_torch"], found
    assert version_tuple(found["pydantic"]) >= (2, 12), found
    assert version_tuple(found["typing_extensions"]) >= (4, 13), found


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def test_only_the_full_constraints_carry_the_convert_toolchain():
    """The profiles without `convert` pin neither its packages nor its caps; the full set (what ./run installs)
    holds them, and every file agrees with pyproject's own pins."""
    convert = {"litert-torch", "ai-edge-quantizer"}
    for profile in PROFILES:
        found = pins(profile)
        assert convert.isdisjoint(found), profile
        assert version_tuple(found["pydantic"]) >= (2, 12), (profile, found["pydantic"])
        assert version_tuple(found["typing-extensions"]) >= (4, 13), (profile, found["typing-extensions"])
    full = pins("all")
    assert convert <= set(full)
    extras = CONFIG["project"]["optional-dependencies"]
    exact = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", req).groups() for group in extras.values()
                 for req in group if re.fullmatch(r"[A-Za-z0-9_.-]+==\S+", req))
    for profile in [*PROFILES, "all"]:
        found = pins(profile)
        for name, version in exact.items():
            assert found.get(name, version) == version, (profile, name)


def test_the_train_profile_pins_the_torch_the_run_script_installs():
    """No fresh venv with torch here (minutes); the train profile pins the very torch ./run and pyproject name."""
    run = re.search(r'pip install -q "torch==([^"]+)"', (ROOT / "run").read_text())
    assert run, "the run script installs torch==X first"
    assert pins("train")["torch"] == run.group(1) == pins("all")["torch"]
    assert f"torch=={run.group(1)}" in CONFIG["project"]["optional-dependencies"]["train"]
    readme = (ROOT / "README.md").read_text()
    assert f"pip install torch=={run.group(1)} --index-url https://download.pytorch.org/whl/cpu" in readme
    for profile in [*PROFILES, "all"]:
        assert f"-c constraints/{profile}.txt" in readme, profile
