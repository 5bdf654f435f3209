"""Energy: the accelerator model of quantized DNNs and baselines (eqs. 7-14) and the eCAL lifecycle account."""

from edgejoule.energy.accelerator import (
    AcceleratorConstants,
    EnergyBreakdown,
    LayerEnergy,
    LayerSpec,
    baseline_energy,
    dnn_energy,
    e_mac_pj,
)
from edgejoule.energy.ecal import LifecycleStages, compute_energy_j, ecal_j_per_bit

__all__ = [
    "AcceleratorConstants",
    "EnergyBreakdown",
    "LayerEnergy",
    "LayerSpec",
    "LifecycleStages",
    "baseline_energy",
    "compute_energy_j",
    "dnn_energy",
    "e_mac_pj",
    "ecal_j_per_bit",
]
