r"""Model family ``deeprx``: a DeepRx-style fully convolutional receiver (Honkala et al., IEEE TWC 2021).

Input: six real channels over the :math:`n_{sym} \times n_{sc}` grid of :mod:`core.tasks.ofdm`: the received
grid Y, the pilot grid P and the raw LS estimate :math:`\hat H_{LS}` (real and imaginary parts each).
Network (DeepRx Fig. 3, scaled by ``width`` C and ``blocks`` K so teachers and students are one family):

- input: 3x3 convolution 6 -> C;
- K pre-activation ResNet blocks,
  :math:`x \leftarrow x + \mathrm{PW}_2(\mathrm{DW}_2(\rho(\mathrm{BN}_2(\mathrm{PW}_1(\mathrm{DW}_1(\rho(\mathrm{BN}_1(x))))))))`,
  each DW a depthwise 3x3 convolution dilated by :math:`(d_t, d_f)` (time, frequency) from ``dilations``
  (cycled over the blocks), each PW a pointwise 1x1 convolution C -> C, :math:`\rho` = ReLU;
- output: BN, ReLU, 1x1 convolution C -> bits per symbol: one logit per bit per RE; loss: BCE on data REs.

``describe`` counts per layer (no torch): a KxK convolution ``c_in -> c_out`` on the grid of N REs has
:math:`N K^2 c_{in} c_{out}` MACs (depthwise: :math:`N K^2 C`) and its weights plus biases; batch norm at
inference is a per-channel scale and shift (:math:`N C` MACs, 2C weights); activations are output values.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field

from core.energy import LayerSpec
from core.hookspecs import hookimpl

IN_CHANNELS = 6
DEFAULT_DILATIONS: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 4), (2, 3), (1, 1))


class DeepRxArch(BaseModel):
    model_config = ConfigDict(frozen=True)

    width: int = Field(16, ge=1, description="channels C of every block")
    blocks: int = Field(4, ge=1, description="pre-activation ResNet blocks K")
    bits_per_symbol: int = Field(2, ge=1, description="output logits per RE")
    n_sym: int = Field(14, ge=1)
    n_sc: int = Field(24, ge=1)
    dilations: tuple[tuple[int, int], ...] = Field(DEFAULT_DILATIONS, description="(time, frequency) per block, cycled")

    def dilation(self, block: int) -> tuple[int, int]:
        return self.dilations[block % len(self.dilations)]


def _conv(name: str, kind: str, n: int, k: int, c_in: int, c_out: int, depthwise: bool = False) -> LayerSpec:
    per_out = k * k * (1 if depthwise else c_in)
    return LayerSpec(name=name, kind=kind, macs=n * per_out * c_out, weights=per_out * c_out + c_out, activations=n * c_out)


def _bn(name: str, n: int, c: int) -> LayerSpec:
    return LayerSpec(name=name, kind="bn", macs=n * c, weights=2 * c, activations=n * c)


def describe(arch: DeepRxArch) -> list[LayerSpec]:
    n, c = arch.n_sym * arch.n_sc, arch.width
    layers = [_conv("input", "conv", n, 3, IN_CHANNELS, c)]
    for b in range(arch.blocks):
        for half in (1, 2):
            layers += [
                _bn(f"block{b}.bn{half}", n, c),
                _conv(f"block{b}.dw{half}", "dwconv", n, 3, c, c, depthwise=True),
                _conv(f"block{b}.pw{half}", "pwconv", n, 1, c, c),
            ]
    layers += [_bn("out.bn", n, c), _conv("out", "pwconv", n, 1, c, arch.bits_per_symbol)]
    return layers


class DeepRxFamily:
    name = "deeprx"
    task = "ofdm"

    def build(self, arch: Mapping[str, Any] | DeepRxArch) -> Any:
        from plugins.deeprx_net import DeepRx

        return DeepRx(DeepRxArch.model_validate(arch))

    def describe(self, arch: Mapping[str, Any] | DeepRxArch) -> list[LayerSpec]:
        return describe(DeepRxArch.model_validate(arch))


@hookimpl
def register_models(register) -> None:
    register("deeprx", DeepRxFamily())
