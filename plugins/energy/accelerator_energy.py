"""The accelerator energy model of the precoder-compression paper (eqs. 7-14) as an energy-estimator plugin.

The equations and counting conventions live in :mod:`edgejoule.energy.accelerator`; this plugin exposes them
under the name ``accelerator`` so that every consumer picks an estimator by name.
"""

from __future__ import annotations

from typing import Sequence

from edgejoule.energy.accelerator import (
    DEFAULT_CONSTANTS,
    AcceleratorConstants,
    EnergyBreakdown,
    LayerSpec,
    baseline_energy,
    dnn_energy,
)
from edgejoule.hookspecs import hookimpl


class AcceleratorEstimator:
    name = "accelerator"

    def __init__(self, constants: AcceleratorConstants = DEFAULT_CONSTANTS) -> None:
        self.constants = constants

    def estimate(
        self, layers: Sequence[LayerSpec], bits: Sequence[int], activation_bits: int | Sequence[int] = 16
    ) -> EnergyBreakdown:
        return dnn_energy(layers, bits, activation_bits, self.constants)

    def estimate_ops(self, macs: float, bits: int = 16) -> EnergyBreakdown:
        return baseline_energy(macs, bits, self.constants)


@hookimpl
def register_energy_estimators(register) -> None:
    register("accelerator", AcceleratorEstimator())
