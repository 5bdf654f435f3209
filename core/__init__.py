"""edgejoule: energy-efficient, site-specific neural models for the wireless edge.

This package is the core (the folder ``core/`` of the source tree): contracts, shared science and message
schemas. It imports no plugin, no registry and no agent, and never torch: an edge device imports it.

The public API for plugin authors is re-exported here, so a plugin reads::

    from edgejoule import BaselineResult, hookimpl

    @hookimpl
    def register_baselines(register):
        register("mrt", MatchedFilter())

- :data:`hookimpl`: the marker of a hook implementation (the hooks are in :mod:`edgejoule.hookspecs`);
- the interfaces a registered object follows (:mod:`edgejoule.interfaces`);
- what those interfaces exchange: :class:`BaselineResult`, :class:`GeneratedChannels`, :class:`LayerSpec`,
  :class:`EnergyBreakdown`, :class:`SiteConfig`, :class:`ModelManifest`;
- :class:`EdgejouleError`, the error whose message the CLI prints as one line (exit 2).
"""

from edgejoule.energy.accelerator import EnergyBreakdown, LayerSpec
from edgejoule.errors import EdgejouleError
from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import (
    Baseline,
    BaselineResult,
    ChannelGenerator,
    Compressor,
    EnergyEstimator,
    EnergyMeter,
    GeneratedChannels,
    ModelFamily,
    Progress,
    Quantizer,
)
from edgejoule.schemas.manifest import ModelManifest
from edgejoule.sites.config import SiteConfig

__version__ = "0.1.0"

__all__ = [
    "Baseline",
    "BaselineResult",
    "ChannelGenerator",
    "Compressor",
    "EdgejouleError",
    "EnergyBreakdown",
    "EnergyEstimator",
    "EnergyMeter",
    "GeneratedChannels",
    "LayerSpec",
    "ModelFamily",
    "ModelManifest",
    "Progress",
    "Quantizer",
    "SiteConfig",
    "__version__",
    "hookimpl",
]
