"""The torch-free half of the ``deeprx`` family: its architecture, input features and layer description
(equations in :mod:`edgejoule.plugins.reception.deeprx`), shared by the family, its torch module and the export
without any of them importing another."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgejoule.energy import LayerSpec
from edgejoule.energy.counting import OperationCount, count_call
from edgejoule.tasks.ofdm import OfdmConfig, OfdmSlot, interpolate, ls_estimate

IN_CHANNELS = 9
ZF_EPS = 1e-3
DEFAULT_DILATIONS: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 4), (2, 3), (1, 1))


class DeepRxArch(BaseModel):
    model_config = ConfigDict(frozen=True)

    width: int = Field(16, ge=1, description="channels C of every block")
    blocks: int = Field(4, ge=1, description="pre-activation ResNet blocks K")
    bits_per_symbol: int = Field(2, ge=1, description="output logits per RE")
    n_sym: int = Field(14, ge=1)
    n_sc: int = Field(24, ge=1)
    dilations: tuple[tuple[int, int], ...] = Field(DEFAULT_DILATIONS, description="(time, frequency) per block, cycled")
    pilot_symbols: tuple[int, ...] = Field((2, 11), description="pilot OFDM symbols of the grid (the features' count)")

    def dilation(self, block: int) -> tuple[int, int]:
        return self.dilations[block % len(self.dilations)]


def features(cfg: OfdmConfig, slot: OfdmSlot) -> np.ndarray:
    """float32 [B, 9, n_sym, n_sc]: Y, P, the interpolated LS estimate, Z (re, im) and G (equations in :mod:`edgejoule.plugins.reception.deeprx`)."""
    return feature_planes(cfg, slot.y, slot.h_ls)


def feature_planes(cfg: OfdmConfig, y: np.ndarray, h_ls: np.ndarray) -> np.ndarray:
    """:func:`features` of the received grids ``y`` and their LS estimates."""
    p = np.broadcast_to(cfg.pilots, y.shape)
    h = interpolate(cfg, h_ls)
    g = h.real**2 + h.imag**2
    z = np.conj(h) * y / (g + ZF_EPS)
    planes = [y.real, y.imag, p.real, p.imag, h.real, h.imag, z.real, z.imag, g]
    return np.stack(planes, 1).astype(np.float32)


def feature_operations(cfg: OfdmConfig) -> OperationCount:
    """The ``implemented`` counting of :func:`features` on one slot, the LS estimate included
    (:func:`edgejoule.tasks.ofdm.ls_estimate`), read from the code on a probe slot."""
    y = np.ones((1, cfg.n_sym, cfg.n_sc), np.complex64)  # the operations depend on the grid, not the values
    return count_call(lambda y: feature_planes(cfg, y, ls_estimate(cfg, y)), y)


def feature_ops(cfg: OfdmConfig) -> int:
    """The ``paper`` counting: real multiplications per slot of ``features`` (LS, interpolation, equalization
    features)."""
    n_re = cfg.n_sym * cfg.n_sc
    return 4 * int(cfg.pilot_mask.sum()) + 4 * len(cfg.pilot_symbols) * cfg.n_sc + 4 * n_re + 9 * n_re


def _conv(name: str, kind: str, n: int, k: int, c_in: int, c_out: int, depthwise: bool = False) -> LayerSpec:
    per_out = k * k * (1 if depthwise else c_in)
    return LayerSpec(name=name, kind=kind, macs=n * per_out * c_out, weights=per_out * c_out + c_out, activations=n * c_out)


def _bn(name: str, n: int, c: int) -> LayerSpec:
    return LayerSpec(name=name, kind="bn", macs=n * c, weights=2 * c, activations=n * c)


def grid(arch: DeepRxArch) -> OfdmConfig:
    """The resource grid the architecture is built for (its features' and layers' counts depend on it)."""
    return OfdmConfig(n_sym=arch.n_sym, n_sc=arch.n_sc, pilot_symbols=arch.pilot_symbols)


def describe(arch: DeepRxArch) -> list[LayerSpec]:
    """The ``features`` layer (its ``paper`` count, :func:`feature_ops`), then the weight layers."""
    n, c = arch.n_sym * arch.n_sc, arch.width
    layers = [
        LayerSpec(name="features", kind="features", macs=feature_ops(grid(arch)), weights=0,
                  activations=n * IN_CHANNELS),
        _conv("input", "conv", n, 3, IN_CHANNELS, c),
    ]
    for b in range(arch.blocks):
        for half in (1, 2):
            layers += [
                _bn(f"block{b}.bn{half}", n, c),
                _conv(f"block{b}.dw{half}", "dwconv", n, 3, c, c, depthwise=True),
                _conv(f"block{b}.pw{half}", "pwconv", n, 1, c, c),
            ]
    layers += [_bn("out.bn", n, c), _conv("out", "pwconv", n, 1, c, arch.bits_per_symbol)]
    return layers
