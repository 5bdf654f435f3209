"""The plugin manager: built-ins through entry points, a third-party package installed beside them,
name clashes and contract violations reported by name."""

from __future__ import annotations

import json
import re
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
        name = "matched-filter"
        task = "precoding"

        def run(self, H, noise_power, p_max):
            W = np.conj(np.swapaxes(H, -1, -2))
            return BaselineResult(output=W, macs_per_sample=np.full(len(H), self.op_count(*H.shape[-1:], H.shape[-2])))

        def op_count(self, n_t, n_u, iterations=None):
            return 4.0 * n_t * n_u

    @hookimpl
    def register_baselines(register):
        register("matched-filter", MatchedFilter())
"""


def test_builtins_come_from_entry_points():
    infos = get_manager().infos
    assert BUILTINS <= set(infos)
    for name in BUILTINS:
        assert infos[name].source.startswith("entry point edgejoule.plugins."), infos[name].source
        assert infos[name].error is None
    assert get_manager().provider("baselines", "wmmse") == "wmmse"


def test_third_party_plugin_is_listed_and_usable(tmp_path):
    make_distribution(tmp_path, "edgejoule_mf", THIRD_PARTY)
    env = {"PYTHONPATH": str(tmp_path)}
    listed = run_cli("plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    info = {p["name"]: p for p in json.loads(listed.stdout)}["edgejoule_mf"]
    assert info["provides"] == {"baselines": ["matched-filter"]}
    assert info["hooks"] == ["register_baselines"]
    assert "edgejoule_mf 0.1" in info["source"]
    used = run_cli("energy", "baseline", "--method", "matched-filter", "--counting", "paper", "--nt", "64", "--nu", "4",
                   "--json", env=env)
    assert used.returncode == 0, used.stderr
    assert json.loads(used.stdout)["macs"] == 4.0 * 64 * 4
    # it has no operations() of its own, so the implemented counting is refused in one line
    refused = run_cli("energy", "baseline", "--method", "matched-filter", "--nt", "64", "--nu", "4", env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "baseline 'matched-filter' (edgejoule_mf) gives no operations()" in refused.stderr


def test_name_clash_names_both_plugins(tmp_path):
    make_distribution(tmp_path, "edgejoule_rogue", THIRD_PARTY.replace('register("matched-filter"', 'register("zf"'))
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


def baseline(task: str = "precoding", **members) -> types.SimpleNamespace:
    """An object with the members of the Baseline protocol (``members`` replace or, set to None, remove them)."""
    attrs = {"name": "same", "task": task, "run": lambda *a, **k: None, "op_count": lambda **dims: 0.0, **members}
    return types.SimpleNamespace(**{k: v for k, v in attrs.items() if v is not None})


def plugin_registering(*objects) -> types.SimpleNamespace:
    def register_baselines(register):
        for i, obj in enumerate(objects):
            register(f"thing{i}", obj)

    return types.SimpleNamespace(register_baselines=hookimpl(register_baselines))


def test_conflict_in_code_and_unknown_name():
    first, second = types.SimpleNamespace(), types.SimpleNamespace()
    for ns in (first, second):
        ns.register_baselines = hookimpl(lambda register: register("same", baseline()))
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


@pytest.mark.parametrize("obj, message", [
    (type("MatchedFilter", (), {"name": "mrt", "task": "precoding", "run": None, "op_count": None}),
     "plugin 'p' registers baseline 'thing0' as the class MatchedFilter; register an instance, MatchedFilter()"),
    (baseline(op_count=None), "plugin 'p' registers baseline 'thing0' without op_count, which the Baseline protocol"),
    (baseline(task="precodng"), "for task 'precodng'; the tasks are precoding, detection, ofdm"),
])
def test_a_registered_object_is_checked_against_its_protocol(obj, message):
    manager = PluginManager()
    with pytest.raises(PluginContractError, match=re.escape(message)):
        manager.register(plugin_registering(obj), "p")
    assert manager.names("baselines") == [] and "p" not in manager.infos


def test_a_broken_plugin_keeps_none_of_its_registrations():
    manager = PluginManager()
    plugin = plugin_registering(baseline(), baseline(task="radar"))
    with pytest.raises(PluginContractError, match="thing1"):
        manager.register(plugin, "half")
    assert manager.names("baselines") == [] and not manager.pm.is_registered(plugin)


@pytest.mark.parametrize("source, reason", [
    ("raise RuntimeError('no licence server')", "its import raised RuntimeError: no licence server"),
    ("from edgejoule import hookimpl\n@hookimpl\ndef register_modelz(register):\n    pass",
     "breaks the edgejoule contract"),
    ("from edgejoule import hookimpl\n@hookimpl\ndef register_baselines(register):\n    register('x', object())",
     "without name, op_count, run, task"),
    ("from edgejoule import hookimpl\n@hookimpl\ndef register_baselines(register):\n    raise KeyError('cfg')",
     "register_baselines raised KeyError"),
])
def test_a_broken_plugin_is_listed_as_broken_and_the_rest_works(tmp_path, source, reason):
    make_distribution(tmp_path, "edgejoule_broken", source)
    env = {"PYTHONPATH": str(tmp_path)}
    listed = run_cli("plugins", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    infos = {p["name"]: p for p in json.loads(listed.stdout)}
    assert infos["edgejoule_broken"]["error"].startswith("broken: ") and reason in infos["edgejoule_broken"]["error"]
    assert infos["zf"]["error"] is None and "zf" in infos["zf"]["provides"]["baselines"]
    # one line on stderr names the plugin and the way to silence it; no traceback
    warning = [line for line in listed.stderr.splitlines() if "edgejoule_broken" in line]
    assert len(warning) == 1 and "EDGEJOULE_DISABLE_PLUGINS=edgejoule_broken" in warning[0], listed.stderr
    assert "Traceback" not in listed.stderr
    used = run_cli("energy", "baseline", "--method", "zf", "--nt", "64", "--nu", "4", "--json", env=env)
    assert used.returncode == 0, used.stderr
    quiet = run_cli("plugins", env={**env, "EDGEJOULE_DISABLE_PLUGINS": "edgejoule_broken"})
    assert quiet.returncode == 0 and "edgejoule_broken" not in quiet.stderr + quiet.stdout


def test_a_baseline_that_returns_a_bare_array_is_named_in_one_line(tmp_path):
    bare = THIRD_PARTY.replace("return BaselineResult(output=W, macs_per_sample", "return W  # (")
    make_distribution(tmp_path, "edgejoule_bare", bare)
    result = run_cli("baseline", "run", "--site", "urban-nlos", "--method", "matched-filter", "--limit", "5",
                     env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert ("baseline 'matched-filter' (plugin edgejoule_bare) returned ndarray, not the BaselineResult"
            in result.stderr), result.stderr
