"""The one plugin manager of edgejoule.

Built-in plugins are entry points of the ``edgejoule`` distribution (group ``edgejoule``), loaded exactly
like a third-party plugin's, so "register a new plugin" is the same path for everyone. After loading,
``check_pending()`` rejects hook implementations that match no contract, and every ``register`` hook is
called once per plugin so that each registered name is attributed to the plugin that provided it: a name
registered by two plugins is an error naming both.

A plugin whose optional dependencies are missing (say, torch on an edge device) is listed as unavailable
with the import error, not fatal: ``edgejoule plugins`` shows it. A broken plugin (its import raises, a hook
that is not in the contract, an object that does not follow its kind's protocol in
:mod:`edgejoule.interfaces`, an unknown ``task``) is listed as broken with one line that names it, none of its
registrations are kept, and every other plugin works; registered in code, the same checks raise.

Environment: ``EDGEJOULE_DISABLE_PLUGINS=a,b`` skips the named entry points.
"""

from __future__ import annotations

import importlib.metadata
import logging
from dataclasses import dataclass, field
from typing import Any

import pluggy

from edgejoule import hookspecs
from edgejoule.errors import EdgejouleError
from edgejoule.interfaces import (
    TASKS,
    Baseline,
    ChannelGenerator,
    Compressor,
    EnergyEstimator,
    EnergyMeter,
    ModelFamily,
    Quantizer,
)
from edgejoule.settings import Settings

log = logging.getLogger("edgejoule.plugins")

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
#: kind of thing -> the protocol every registered object of that kind follows
PROTOCOLS: dict[str, type] = {
    "models": ModelFamily,
    "quantizers": Quantizer,
    "compressors": Compressor,
    "baselines": Baseline,
    "energy_estimators": EnergyEstimator,
    "energy_meters": EnergyMeter,
    "channel_generators": ChannelGenerator,
}
#: kinds whose objects say which task of edgejoule.tasks they serve
TASK_KINDS = ("models", "baselines")
DISABLE_HINT = "skip it with EDGEJOULE_DISABLE_PLUGINS={name}"


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
        disabled = Settings().disabled_plugins
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
            except Exception as exc:  # noqa: BLE001 - a third party's bug must not take down every command
                self._broken(ep.name, source, f"its import raised {type(exc).__name__}: {exc}")
                continue
            try:
                self.register(module, ep.name, source)
            except PluginContractError as exc:
                self._broken(ep.name, source, str(exc))

    def _broken(self, name: str, source: str, reason: str) -> None:
        self.infos[name] = PluginInfo(name, source, error=f"broken: {reason}")
        log.warning("plugin '%s' is broken and was skipped: %s; %s", name, reason, DISABLE_HINT.format(name=name))

    def register(self, plugin: Any, name: str, source: str = "registered in code") -> None:
        """Register one plugin object (a module or an instance with hook implementations)."""
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            raise PluginContractError(f"plugin '{name}' ({source}) breaks the edgejoule contract: {exc}; "
                                      f"{DISABLE_HINT.format(name=name)}") from None
        hooks = sorted(impl_name for impl_name, caller in vars(self.pm.hook).items()
                       if isinstance(caller, pluggy.HookCaller)
                       and any(impl.plugin_name == name for impl in caller.get_hookimpls()))
        # all of a plugin's registrations are checked before any is kept: a broken plugin leaves nothing behind
        staged: list[Registration] = []
        try:
            for kind, hook_name in KINDS.items():
                for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                    if impl.plugin_name == name:
                        self._call_register_hook(impl, kind, name, staged)
        except (PluginContractError, PluginConflictError):
            self.pm.unregister(plugin)
            raise
        info = PluginInfo(name, source, hooks=hooks)
        for reg in staged:
            self._registry[reg.kind][reg.name] = reg
            info.provides.setdefault(reg.kind, []).append(reg.name)
        self.infos[name] = info

    def _call_register_hook(self, impl: pluggy.HookImpl, kind: str, plugin: str, staged: list[Registration]) -> None:
        def register(thing_name: str, obj: Any) -> None:
            check_registration(kind, thing_name, obj, plugin)
            existing = self._registry[kind].get(thing_name) or next(
                (r for r in staged if (r.kind, r.name) == (kind, thing_name)), None)
            if existing is not None:
                raise PluginConflictError(
                    f"{kind[:-1].replace('_', ' ')} '{thing_name}' is registered by both plugin "
                    f"'{existing.plugin}' and plugin '{plugin}'; disable one with EDGEJOULE_DISABLE_PLUGINS"
                )
            staged.append(Registration(kind, thing_name, obj, plugin))

        try:
            impl.function(register=register)
        except (PluginContractError, PluginConflictError):
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the plugin's fault, in one line
            raise PluginContractError(f"plugin '{plugin}': {impl.function.__name__} raised {type(exc).__name__}: {exc}") from exc

    # -- lookup --------------------------------------------------------------------------------------
    def names(self, kind: str, task: str | None = None) -> list[str]:
        """Registered names of ``kind``; with ``task``, only things made for that task (model families,
        baselines)."""
        return sorted(n for n, r in self._registry[kind].items() if task is None or getattr(r.obj, "task", None) == task)

    def get(self, kind: str, name: str, task: str | None = None) -> Any:
        """The object registered as ``name``; with ``task``, only one made for that task (a detection baseline is
        not offered, nor accepted, where a precoder is wanted)."""
        what = kind[:-1].replace("_", " ")
        known = ", ".join(self.names(kind, task)) or "none"
        registration = self._registry[kind].get(name)
        if registration is None:
            unavailable = [i.name for i in self.infos.values() if i.error]
            hint = f" (unavailable plugins: {', '.join(unavailable)})" if unavailable else ""
            raise UnknownPluginError(f"unknown {what} '{name}'; known{f' for {task}' if task else ''}: {known}{hint}")
        if task is not None and registration.obj.task != task:
            raise UnknownPluginError(f"{what} '{name}' serves {registration.obj.task}, not {task}; "
                                     f"{task} {kind}: {known}")
        return registration.obj

    def provider(self, kind: str, name: str) -> str:
        return self._registry[kind][name].plugin

    def add_commands(self, cli: Any) -> None:
        self.pm.hook.register_commands(cli=cli)


def check_registration(kind: str, name: str, obj: Any, plugin: str) -> None:
    """Raise :class:`PluginContractError`, in one line naming the plugin, unless ``obj`` follows the protocol of
    ``kind`` (an instance with every member the protocol names) and, for models and baselines, serves a known task."""
    what = f"plugin '{plugin}' registers {kind[:-1].replace('_', ' ')} '{name}'"
    if isinstance(obj, type):
        raise PluginContractError(f"{what} as the class {obj.__name__}; register an instance, {obj.__name__}()")
    protocol = PROTOCOLS[kind]
    missing = [member for member in _members(protocol) if not hasattr(obj, member)]
    if missing:
        raise PluginContractError(f"{what} without {', '.join(missing)}, which the {protocol.__name__} protocol "
                                  "of edgejoule.interfaces asks for")
    if kind in TASK_KINDS and obj.task not in TASKS:
        raise PluginContractError(f"{what} for task {obj.task!r}; the tasks are {', '.join(TASKS)}")


def _members(protocol: type) -> list[str]:
    """The attributes and methods a protocol declares (``typing.get_protocol_members`` from Python 3.13 on)."""
    methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    return sorted({*getattr(protocol, "__annotations__", {}), *methods})


_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide plugin manager, loaded from entry points on first use."""
    global _manager
    if _manager is None:
        manager = PluginManager()
        manager.load_entry_points()
        _manager = manager
    return _manager


def get(kind: str, name: str, task: str | None = None) -> Any:
    """Shortcut: the object registered under ``name`` for ``kind`` (and ``task``)."""
    return get_manager().get(kind, name, task)


def names(kind: str, task: str | None = None) -> list[str]:
    return get_manager().names(kind, task)
