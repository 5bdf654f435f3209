r"""Model family ``deeprx``: a DeepRx-style fully convolutional receiver (Honkala et al., IEEE TWC 2021).

Input (``features``): nine real planes over the :math:`n_{sym} \times n_{sc}` grid of :mod:`edgejoule.tasks.ofdm`:
the received grid Y, the pilot grid P, the LS estimate interpolated over the grid :math:`\hat H` (real and
imaginary parts each; DeepRx's "raw channel estimate"), and two equalization features

.. math::

    Z = \frac{\hat H^* Y}{|\hat H|^2 + \epsilon}\ \text{(re, im)}, \qquad G = |\hat H|^2, \qquad \epsilon = 10^{-3}.

Why Z and G (measured by ``benchmarks/bench_receiver.py --ablation``; docs/RECEIVER.md "Diagnosis"): with only
Y, P and the LS estimate (zero off the pilots, as first built) the network must interpolate *and* form
:math:`\hat H^* Y / |\hat H|^2` with ReLU layers; a 16x3 net trained 1,000 steps then floors at 5.7e-3 at
40 dB where LS+LMMSE reaches 2.4e-4. Interpolating the estimate outside the net gives 3.2e-3; adding the
unnormalized product :math:`\hat H^* Y` barely helps (2.8e-3), because in a fade (:math:`|H|^2 \sim 10^{-3}`)
the product is as small as the offsets the other paths add to the output. Z is per-RE scale free, so the
sign decisions of the baseline are one linear path away, and the floor falls to the baseline's (2.6e-4 vs
2.4e-4) in the same 1,000 steps. :math:`\epsilon` (a 30 dB regularizer) only bounds
Z in deep fades; no SINR knowledge enters. The features cost ``feature_ops`` real multiplications per slot
(the LS division by the known pilots, the two interpolation passes, then :math:`|\hat H|^2` 2, reciprocal 1,
:math:`\hat H^* Y` 4 and the scaling 2 per RE), counted as the first layer of ``describe``.

Network (DeepRx Fig. 3, scaled by ``width`` C and ``blocks`` K so teachers and students are one family):

- input: 3x3 convolution 9 -> C;
- K pre-activation ResNet blocks,
  :math:`x \leftarrow x + \mathrm{PW}_2(\mathrm{DW}_2(\rho(\mathrm{BN}_2(\mathrm{PW}_1(\mathrm{DW}_1(\rho(\mathrm{BN}_1(x))))))))`,
  each DW a depthwise 3x3 convolution dilated by :math:`(d_t, d_f)` (time, frequency) from ``dilations``
  (cycled over the blocks), each PW a pointwise 1x1 convolution C -> C, :math:`\rho` = ReLU;
- output: BN, ReLU, 1x1 convolution C -> bits per symbol: one logit per bit per RE; loss: BCE on data REs.

``describe`` counts per layer (no torch): a KxK convolution ``c_in -> c_out`` on the grid of N REs has
:math:`N K^2 c_{in} c_{out}` MACs (depthwise: :math:`N K^2 C`) and its weights plus biases; batch norm at
inference is a per-channel scale and shift (:math:`N C` MACs, 2C weights); activations are output values.

Energy per slot under the two countings (:mod:`edgejoule.energy.counting`, :meth:`DeepRxFamily.energy`):

- ``paper``: eqs. 7-11 on every layer ``describe`` lists, the features as its first layer with the MACs of
  ``feature_ops`` (a formula).
- ``implemented``: eqs. 7-11 on the weight layers (convolutions and batch norms, each ReLU folded into the batch
  norm before it), plus the weightless operations of one slot as one 16-bit ``weightless`` layer: the input
  features as the numpy code computes them, LS estimate included
  (:func:`edgejoule.plugins.reception.deeprx_arch.feature_operations`, on
  :class:`~edgejoule.energy.counting.Counted` arrays), and the torch graph's operations outside the weight
  layers (the K residual additions), counted by :class:`edgejoule.plugins.energy.op_counter.OperationCounter`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

from edgejoule.energy import EnergyBreakdown, LayerSpec, dnn_energy
from edgejoule.energy.counting import Counting, OperationCount, implemented_dnn_energy
from edgejoule.hookspecs import hookimpl
from edgejoule.plugins.reception.deeprx_arch import DeepRxArch, describe, feature_operations, grid


class DeepRxFamily:
    name = "deeprx"
    task = "ofdm"

    def build(self, arch: Mapping[str, Any] | DeepRxArch) -> Any:
        from edgejoule.plugins.reception.deeprx_net import DeepRx

        return DeepRx(DeepRxArch.model_validate(arch))

    def describe(self, arch: Mapping[str, Any] | DeepRxArch) -> list[LayerSpec]:
        return describe(DeepRxArch.model_validate(arch))

    def energy(self, arch: Mapping[str, Any] | DeepRxArch, bits: Sequence[int], activation_bits: int = 16,
               counting: Counting = "implemented") -> EnergyBreakdown:
        """One slot with ``bits`` for each weight layer (``describe`` without its ``features``): module docstring;
        under ``paper`` the features layer is priced at 16 bits."""
        layers = self.describe(arch)
        if counting == "paper":
            return dnn_energy(layers, [16, *bits], activation_bits)
        return implemented_dnn_energy(layers[1:], list(bits), activation_bits, self.weightless_operations(arch))

    def weightless_operations(self, arch: Mapping[str, Any] | DeepRxArch) -> OperationCount:
        """The features and the graph's operations outside the weight layers, counted while they run."""
        a = DeepRxArch.model_validate(arch)
        return feature_operations(grid(a)) + _graph_operations(a)


@functools.lru_cache(maxsize=64)
def _graph_operations(arch: DeepRxArch) -> OperationCount:
    """The net run once on a batch of one on the ``meta`` device (shapes only), its convolutions and batch
    norms skipped (eqs. 7-11 price them)."""
    import torch

    from edgejoule.plugins.energy.op_counter import OperationCounter
    from edgejoule.plugins.reception.deeprx_net import DeepRx

    with torch.device("meta"):
        model = DeepRx(arch).eval()
    weight_layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.BatchNorm2d))]
    x = torch.zeros(1, 9, arch.n_sym, arch.n_sc, device="meta")
    with torch.no_grad(), OperationCounter(weight_layers) as counter:
        model(x)
    return counter.count


@hookimpl
def register_models(register) -> None:
    register("deeprx", DeepRxFamily())
