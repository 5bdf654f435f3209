"""The one plugin manager of edgejoule.

Built-in plugins are entry points of the ``edgejoule`` distribution (group ``edgejoule``), loaded exactly
like a third-party plugin's, so "register a new plugin" is the same path for everyone. After loading,
``check_pending()`` rejects hook implementations that match no contract, and every ``register`` hook is
called once per plugin so that each registered name is attributed to the plugin that provided it: a name
registered by two plugins is an error naming both.

A plugin whose optional dependencies are missing (say, torch on an edge device) is listed as unavailable
with the import error, not fatal: ``edgejoule plugins`` shows it.

Environment: ``EDGEJOULE_DISABLE_PLUGINS=a,b`` skips the named entry points.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from edgejoule import hookspecs
from edgejoule.errors import EdgejouleError

ENTRY_POINT_GROUP = hookspecs.PROJECT

#: kind of thing -> name of the register hook that provides it
KINDS: dict[str, str] = {
    "models": "register_models",
    "quantizers": "register_quantizers",
    "compressors": "register_compressors",
    "baselines": "register_baselines",
    "energy_estimators": "register_energy_estimators",
    "energy_meters": "register_energy_meters",
    "channel_generators": "register_channel_generators",
}


class PluginConflictError(EdgejouleError):
    """Two plugins registered the same name for the same kind."""


class PluginContractError(EdgejouleError):
    """A plugin implements a hook that is not in the contract, or with the wrong arguments."""


class UnknownPluginError(EdgejouleError):
    """A name was asked for that no loaded plugin registered."""


@dataclass
class PluginInfo:
    """What ``edgejoule plugins`` shows about one plugin."""

    name: str
    source: str
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Registration:
    kind: str
    name: str
    obj: Any
    plugin: str


class PluginManager:
    """Loads plugins and holds what they registered, per kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registry: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}

    # -- loading -------------------------------------------------------------------------------------
    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        disabled = {n.strip() for n in os.environ.get("EDGEJOULE_DISABLE_PLUGINS", "").split(",") if n.strip()}
        for ep in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
            if ep.name in disabled or ep.name in self.infos:
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
            source = f"entry point {ep.value} ({dist})"
            try:
                module = ep.load()
            except ImportError as exc:
                self.infos[ep.name] = PluginInfo(ep.name, source, error=f"unavailable: {exc}")
                continue
            self.register(module, ep.name, source)

    def register(self, plugin: Any, name: str, source: str = "registered in code") -> None:
        """Register one plugin object (a module or an instance with hook implementations)."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginContractError(f"plugin '{name}' ({source}) breaks the edgejoule contract: {exc}") from None
        hooks = sorted(impl_name for impl_name, caller in vars(self.pm.hook).items()
                       if isinstance(caller, pluggy.HookCaller)
                       and any(impl.plugin_name == name for impl in caller.get_hookimpls()))
        info = PluginInfo(name, source, hooks=hooks)
        self.infos[name] = info
        for kind, hook_name in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name == name:
                    impl.function(register=self._registrar(kind, name, info))

    def _registrar(self, kind: str, plugin: str, info: PluginInfo):
        def register(thing_name: str, obj: Any) -> None:
            existing = self._registry[kind].get(thing_name)
            if existing is not None:
                raise PluginConflictError(
                    f"{kind[:-1].replace('_', ' ')} '{thing_name}' is registered by both plugin "
                    f"'{existing.plugin}' and plugin '{plugin}'; disable one with EDGEJOULE_DISABLE_PLUGINS"
                )
            self._registry[kind][thing_name] = Registration(kind, thing_name, obj, plugin)
            info.provides.setdefault(kind, []).append(thing_name)

        return register

    # -- lookup --------------------------------------------------------------------------------------
    def names(self, kind: str, task: str | None = None) -> list[str]:
        """Registered names of ``kind``; with ``task``, only things made for that task (model families,
        baselines)."""
        return sorted(n for n, r in self._registry[kind].items() if task is None or getattr(r.obj, "task", None) == task)

    def get(self, kind: str, name: str) -> Any:
        try:
            return self._registry[kind][name].obj
        except KeyError:
            known = ", ".join(self.names(kind)) or "none"
            unavailable = [i.name for i in self.infos.values() if i.error]
            hint = f" (unavailable plugins: {', '.join(unavailable)})" if unavailable else ""
            raise UnknownPluginError(
                f"unknown {kind[:-1].replace('_', ' ')} '{name}'; known: {known}{hint}"
            ) from None

    def provider(self, kind: str, name: str) -> str:
        return self._registry[kind][name].plugin

    def add_commands(self, cli: Any) -> None:
        self.pm.hook.register_commands(cli=cli)


_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide plugin manager, loaded from entry points on first use."""
    global _manager
    if _manager is None:
        manager = PluginManager()
        manager.load_entry_points()
        _manager = manager
    return _manager


def get(kind: str, name: str) -> Any:
    """Shortcut: the object registered under ``name`` for ``kind``."""
    return get_manager().get(kind, name)


def names(kind: str, task: str | None = None) -> list[str]:
    return get_manager().names(kind, task)
