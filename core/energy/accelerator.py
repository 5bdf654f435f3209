r"""Energy per inference on a quantized-DNN accelerator, and of classical baselines on the same hardware.

Reference: the precoder-compression paper (shared/seeds/precoder-compression-paper.txt), section III-C,
after Moons et al. 2017 with constants fitted to Horowitz (ISSCC 2014).

.. math::

    E_{DNN} &= E_C + E_W + E_A                                             && (7) \\
    E_C &= E_{MAC} (N_c + 3 N_a)                                           && (8) \\
    E_{MAC} &= \alpha (Q/16)^\beta, \quad \alpha = 0.86\,\mathrm{pJ}, \beta = 1.9  && (9) \\
    E_W &= E_M N_w + E_L N_c / \sqrt{p}                                    && (10) \\
    E_A &= 2 E_M N_a + E_L N_c / \sqrt{p}                                  && (11) \\
    E_B &= E_{MAC} N_c + E_L N_c / \sqrt{p}                                && (14)

with :math:`E_M = 2 E_L = 2 E_{MAC}` and :math:`p = 64 (Q/16)`; the whole model is on chip.

Counting conventions (ours; the paper leaves them open):

- Eqs. 7-11 are applied **per layer** and summed. Each term is priced at the precision of the data it moves:
  MACs (E_C) and weight fetches (:math:`E_M N_w`) at the layer's **weight** bits; activation traffic
  (E_A) and the local-buffer term :math:`E_L N_c/\sqrt{p}` of E_W (partial sums and inputs held in the
  local buffer) at the **activation** bits, 16 by default because the paper quantizes weights only. This
  reading reproduces the paper's Table II within 0.4 uJ at 4 and 8 bits (docs/ENERGY.md); pricing
  everything at the weight bits instead gives far lower figures at 2-4 bits.
- :math:`N_c` counts multiply-accumulates of the layer, biases excluded; :math:`N_w` counts every stored
  parameter (weights and biases); :math:`N_a` counts the layer's **output** activations (batch-norm, ReLU and
  dropout are folded into the layer they follow and add no activations).
- A convolution's MACs are ``out_elements * in_channels * kernel_elements`` with "same" padding, i.e. the
  zero-padded border is counted as if computed (an accelerator does not skip it).
- Baselines (eq. 14) run at 16 bits unless told otherwise: multiplications plus local-buffer accesses, a
  lower bound that ignores control flow, divisions and memory beyond the local buffer.
"""

from __future__ import annotations

import math
from typing import Sequence

from pydantic import BaseModel, ConfigDict, Field, computed_field

PJ_PER_UJ = 1e6


class AcceleratorConstants(BaseModel):
    """Constants of eqs. 9-11. Defaults are the paper's; change them only to model other hardware."""

    model_config = ConfigDict(frozen=True)

    alpha_pj: float = Field(0.86, gt=0, description="E_MAC at 16 bits, picojoules")
    beta: float = Field(1.9, gt=0, description="exponent of the bit-width scaling of E_MAC")
    p_at_16_bits: float = Field(64.0, gt=0, description="parallelism p at Q = 16; p scales as Q/16")


DEFAULT_CONSTANTS = AcceleratorConstants()


class LayerSpec(BaseModel):
    """What the energy model needs to know of one layer; model families describe themselves this way."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str = Field(description="conv, fc, dwconv, ... (informational)")
    macs: int = Field(ge=0, description="N_c: multiply-accumulates per inference")
    weights: int = Field(ge=0, description="N_w: stored parameters, biases included")
    activations: int = Field(ge=0, description="N_a: output activations per inference")


class LayerEnergy(BaseModel):
    name: str
    bits: int
    activation_bits: int = 16
    compute_pj: float
    weights_pj: float
    activations_pj: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.weights_pj + self.activations_pj


class EnergyBreakdown(BaseModel):
    """E_C, E_W, E_A (eq. 7) in microjoules, with the per-layer terms they sum."""

    compute_uj: float
    weights_uj: float
    activations_uj: float
    layers: list[LayerEnergy] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_uj(self) -> float:
        return self.compute_uj + self.weights_uj + self.activations_uj


def e_mac_pj(bits: float, constants: AcceleratorConstants = DEFAULT_CONSTANTS) -> float:
    """Eq. 9: energy of one MAC at ``bits`` bits, picojoules."""
    if bits <= 0:
        raise ValueError(f"bit width must be positive, got {bits}")
    return constants.alpha_pj * (bits / 16.0) ** constants.beta


def _parallelism(bits: float, constants: AcceleratorConstants) -> float:
    return constants.p_at_16_bits * bits / 16.0


def layer_energy(
    layer: LayerSpec, bits: int, activation_bits: int = 16, constants: AcceleratorConstants = DEFAULT_CONSTANTS
) -> LayerEnergy:
    """Eqs. 8, 10 and 11 for one layer with ``bits``-bit weights and ``activation_bits``-bit activations."""
    e_mac = e_mac_pj(bits, constants)
    e_m_weights = 2.0 * e_mac
    e_l_act = e_mac_pj(activation_bits, constants)
    local = e_l_act * layer.macs / math.sqrt(_parallelism(activation_bits, constants))
    return LayerEnergy(
        name=layer.name,
        bits=bits,
        activation_bits=activation_bits,
        compute_pj=e_mac * (layer.macs + 3 * layer.activations),
        weights_pj=e_m_weights * layer.weights + local,
        activations_pj=2 * (2.0 * e_l_act) * layer.activations + local,
    )


def dnn_energy(
    layers: Sequence[LayerSpec],
    bits: Sequence[int],
    activation_bits: int | Sequence[int] = 16,
    constants: AcceleratorConstants = DEFAULT_CONSTANTS,
) -> EnergyBreakdown:
    """Eq. 7 summed over layers, each with its own weight (and optionally activation) bit width."""
    act = [activation_bits] * len(layers) if isinstance(activation_bits, int) else list(activation_bits)
    if len(layers) != len(bits) or len(act) != len(layers):
        raise ValueError(f"{len(bits)} bit widths given for {len(layers)} layers; give one per layer")
    per_layer = [layer_energy(layer, b, a, constants) for layer, b, a in zip(layers, bits, act)]
    return EnergyBreakdown(
        compute_uj=sum(e.compute_pj for e in per_layer) / PJ_PER_UJ,
        weights_uj=sum(e.weights_pj for e in per_layer) / PJ_PER_UJ,
        activations_uj=sum(e.activations_pj for e in per_layer) / PJ_PER_UJ,
        layers=per_layer,
    )


def baseline_energy(macs: float, bits: int = 16, constants: AcceleratorConstants = DEFAULT_CONSTANTS) -> EnergyBreakdown:
    """Eq. 14: a classical algorithm's lower-bound energy, reported as compute (MACs) + local buffer."""
    e_mac = e_mac_pj(bits, constants)
    local = e_mac * macs / math.sqrt(_parallelism(bits, constants))
    return EnergyBreakdown(
        compute_uj=e_mac * macs / PJ_PER_UJ, weights_uj=0.0, activations_uj=local / PJ_PER_UJ
    )
