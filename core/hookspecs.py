"""The pluggy contracts of edgejoule, in the "register" style.

Each hook receives a ``register(name, obj)`` callback (or the CLI app) and calls it once per thing the
plugin provides. The objects follow the protocols in :mod:`edgejoule.interfaces`.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "edgejoule"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[str, Any], None]


@hookspec
def register_models(register: Register) -> None:
    """Register model families (:class:`edgejoule.interfaces.ModelFamily`) by name."""


@hookspec
def register_quantizers(register: Register) -> None:
    """Register quantizers (:class:`edgejoule.interfaces.Quantizer`) by name."""


@hookspec
def register_compressors(register: Register) -> None:
    """Register compression strategies (:class:`edgejoule.interfaces.Compressor`) by name."""


@hookspec
def register_baselines(register: Register) -> None:
    """Register classical baselines (:class:`edgejoule.interfaces.Baseline`) by name."""


@hookspec
def register_energy_estimators(register: Register) -> None:
    """Register energy estimators (:class:`edgejoule.interfaces.EnergyEstimator`) by name."""


@hookspec
def register_energy_meters(register: Register) -> None:
    """Register edge energy meters (:class:`edgejoule.interfaces.EnergyMeter`) by name."""


@hookspec
def register_channel_generators(register: Register) -> None:
    """Register site channel generators (:class:`edgejoule.interfaces.ChannelGenerator`) by name."""


@hookspec
def register_commands(cli: Any) -> None:
    """Add sub-commands to the ``edgejoule`` typer app."""
