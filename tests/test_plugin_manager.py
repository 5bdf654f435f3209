"""The plugin manager: built-ins through entry points, a third-party package installed beside them,
name clashes and contract violations reported by name."""

from __future__ import annotations

import json
import textwrap
import types
from pathlib import Path

import pytest

from edgejoule.hookspecs import hookimpl
from edgejoule.plugin_manager import (
    PluginConflictError,
    PluginContractError,
    PluginManager,
    UnknownPluginError,
    get_manager,
)
from tests.conftest import run_cli

BUILTINS = {"geometric", "zf", "wmmse", "accelerator_energy", "precoder_cnn"}


def make_distribution(root: Path, name: str, module_source: str) -> Path:
    """A minimal installed distribution on a sys.path entry: a module plus its entry-point metadata."""
    (root / f"{name}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[edgejoule]\n{name} = {name}\n")
    return root


THIRD_PARTY = """
    import numpy as np
    from edgejoule.hookspecs import hookimpl
    from edgejoule.interfaces import BaselineResult

    class MatchedFilter:
        name = "mrt"
        task = "precoding"

        def run(self, H, noise_power, p_max):
            W = np.conj(np.swapaxes(H, -1, -2))
            return BaselineResult(output=W, macs_per_sample=np.full(len(H), self.op_count(*H.shape[-1:], H.shape[-2])))

        def op_count(self, n_t, n_u, iterations=None):
            return 4.0 * n_t * n_u

    @hookimpl
    def register_baselines(register):
        register("mrt", MatchedFilter())
"""


def test_builtins_come_from_entry_points():
    infos = get_manager().infos
    assert BUILTINS <= set(infos)
    for name in BUILTINS:
        assert infos[name].source.startswith("entry point edgejoule.plugins."), infos[name].source
        assert infos[name].error is None
    assert get_manager().provider("baselines", "wmmse") == "wmmse"


def test_third_party_plugin_is_listed_and_usable(tmp_path):
    make_distribution(tmp_path, "edgejoule_mrt", THIRD_PARTY)
    env = {"PYTHONPATH": str(tmp_path)}
    listed = run_cli("plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    info = {p["name"]: p for p in json.loads(listed.stdout)}["edgejoule_mrt"]
    assert info["provides"] == {"baselines": ["mrt"]}
    assert info["hooks"] == ["register_baselines"]
    assert "edgejoule_mrt 0.1" in info["source"]
    used = run_cli("energy", "baseline", "--method", "mrt", "--nt", "64", "--nu", "4", "--json", env=env)
    assert used.returncode == 0, used.stderr
    assert json.loads(used.stdout)["macs"] == 4.0 * 64 * 4


def test_name_clash_names_both_plugins(tmp_path):
    make_distribution(tmp_path, "edgejoule_rogue", THIRD_PARTY.replace('register("mrt"', 'register("zf"'))
    result = run_cli("plugins", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    assert "'zf'" in result.stderr and "edgejoule_rogue" in result.stderr and "plugin 'zf'" in result.stderr
    assert "Traceback" not in result.stderr
    # the documented way out works
    ok = run_cli("plugins", env={"PYTHONPATH": str(tmp_path), "EDGEJOULE_DISABLE_PLUGINS": "edgejoule_rogue"})
    assert ok.returncode == 0, ok.stderr


def test_unknown_hook_is_rejected_with_the_plugin_name():
    plugin = types.ModuleType("typo_plugin")

    @hookimpl
    def register_modelz(register):  # not a hook of the contract
        pass

    plugin.register_modelz = register_modelz
    manager = PluginManager()
    with pytest.raises(PluginContractError, match="typo_plugin.*register_modelz|register_modelz"):
        manager.register(plugin, "typo_plugin")
    assert not manager.pm.is_registered(plugin)


def test_conflict_in_code_and_unknown_name():
    first, second = types.SimpleNamespace(), types.SimpleNamespace()
    for ns in (first, second):
        ns.register_baselines = hookimpl(lambda register: register("same", object()))
    manager = PluginManager()
    manager.register(first, "first")
    with pytest.raises(PluginConflictError, match="'first' and plugin 'second'"):
        manager.register(second, "second")
    with pytest.raises(UnknownPluginError, match="known: same"):
        manager.get("baselines", "other")


def test_plugin_with_missing_dependency_is_listed_as_unavailable(tmp_path):
    make_distribution(tmp_path, "edgejoule_needs_gpu", "import not_installed_anywhere\n")
    result = run_cli("plugins", "--json", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    info = {p["name"]: p for p in json.loads(result.stdout)}["edgejoule_needs_gpu"]
    assert info["error"].startswith("unavailable: No module named 'not_installed_anywhere'")
