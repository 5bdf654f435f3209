"""The core (``edgejoule``) and the numpy baselines import on a machine without torch (an edge device)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True, timeout=120)


def test_torch_is_really_blocked():
    result = run_without_torch("import torch")
    assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr


def test_core_and_baselines_import_without_torch():
    code = (
        "import edgejoule, edgejoule.energy, edgejoule.sites, edgejoule.tasks.precoding, edgejoule.schemas, edgejoule.plugin_manager, edgejoule.cli.app\n"
        "import edgejoule.plugins.precoding.zf, edgejoule.plugins.precoding.wmmse, edgejoule.plugins.sites.geometric, edgejoule.plugins.precoding.precoder_cnn\n"
        "from edgejoule import plugin_manager as p\n"
        "print(sorted(p.names('baselines')))\n"
    )
    result = run_without_torch(code)
    assert result.returncode == 0, result.stderr
    assert "'wmmse'" in result.stdout and "'zf'" in result.stdout


def test_baseline_runs_without_torch():
    code = (
        "import numpy as np\n"
        "from edgejoule.sites import get_site, load_dataset\n"
        "from edgejoule.baselines import run_precoding_baseline\n"
        "ds = load_dataset(get_site('urban-nlos').with_overrides(n_samples=50), use_cache=False)\n"
        "print(run_precoding_baseline(ds, 'wmmse').sum_rate_mean)\n"
    )
    result = run_without_torch(code)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) > 0


def test_every_core_module_imports_on_its_own():
    """Each module in a fresh interpreter, first: an import cycle shows up only when its module comes first."""
    import pkgutil

    # core/ itself: the installed edgejoule also holds plugins, the registry and the agent (torch, extras)
    core = Path(__file__).resolve().parents[1] / "core"
    names = sorted(m.name for m in pkgutil.walk_packages([str(core)], "edgejoule."))
    code = "import importlib, subprocess, sys\n" + "\n".join(
        f"r = subprocess.run([sys.executable, '-c', {BLOCK_TORCH + 'import ' + name!r}], capture_output=True, text=True)\n"
        f"assert r.returncode == 0, ({name!r}, r.stderr[-500:])" for name in names)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "edgejoule.interfaces" in names and "edgejoule.cli.app" in names
