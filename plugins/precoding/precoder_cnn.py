r"""The precoder CNN template of the precoder-compression paper (Fig. 1), as a model family.

Input: the real and imaginary parts of :math:`H \in \mathbb{C}^{N_U \times N_T}` as two channels of an
:math:`N_U \times N_T` image, scaled by :math:`\sqrt{P_{max}/\sigma^2}` so that the noise is 1 and the inputs
carry the site's SNR. Layers, each followed by batch norm, ReLU and 5 % dropout except the last:

- CONV: 3x3 convolution, 2 -> C_out channels, "same" padding;
- FCL1: C_out N_U N_T -> D_FCL;  FCL2: D_FCL -> D_FCL;  FCL3: D_FCL -> 2 N_T N_U (real and imaginary of W).

The output is reshaped to :math:`W \in \mathbb{C}^{N_T \times N_U}` and scaled to spend exactly
:math:`P_{max}` (eq. 5 with equality). Search space of the paper: C_out in {8, 16, 32, 64}, D_FCL in
{512, 1024}. :meth:`PrecoderCNNFamily.describe` gives the layers' MACs, weights and activations under the
counting conventions of :mod:`edgejoule.energy.accelerator` without building the network; torch is imported only
by :meth:`PrecoderCNNFamily.build` and :meth:`PrecoderCNNFamily.weightless_operations`.

Energy under the two countings (:mod:`edgejoule.energy.counting`, :meth:`PrecoderCNNFamily.energy`):
``paper`` is eqs. 7-11 on the layers :meth:`describe` lists; ``implemented`` is eqs. 7-11 on the weight layers
(their MACs at their bit widths) plus the weightless operations of the exported graph (the scalings, and
whatever a family computes outside its weight layers), read from the computation by
:mod:`edgejoule.plugins.energy.op_counter` (the graph: :meth:`PrecoderCNN.served`) and priced at 16 bits by
:func:`edgejoule.energy.counting.operations_energy`.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

from edgejoule.energy.accelerator import EnergyBreakdown, LayerSpec, dnn_energy
from edgejoule.energy.counting import Counting, OperationCount, implemented_dnn_energy
from edgejoule.hookspecs import hookimpl
from edgejoule.plugins.precoding.precoder_arch import KERNEL, LAYER_NAMES, PrecoderArch


class PrecoderCNNFamily:
    name = "precoder_cnn"
    task = "precoding"
    layer_names = LAYER_NAMES

    def arch(self, arch: Mapping[str, Any] | PrecoderArch) -> PrecoderArch:
        return arch if isinstance(arch, PrecoderArch) else PrecoderArch.model_validate(dict(arch))

    def outputs(self, arch: PrecoderArch) -> int:
        """Width of FCL3: the real and imaginary parts of W."""
        return 2 * arch.n_t * arch.n_u

    def describe(self, arch: Mapping[str, Any] | PrecoderArch) -> list[LayerSpec]:
        a = self.arch(arch)
        pixels = a.n_u * a.n_t
        flat = a.c_out * pixels
        out = self.outputs(a)
        return [
            LayerSpec(name="CONV", kind="conv", macs=flat * 2 * KERNEL * KERNEL,
                      weights=2 * KERNEL * KERNEL * a.c_out + a.c_out, activations=flat),
            LayerSpec(name="FCL1", kind="fc", macs=flat * a.d_fcl, weights=flat * a.d_fcl + a.d_fcl, activations=a.d_fcl),
            LayerSpec(name="FCL2", kind="fc", macs=a.d_fcl * a.d_fcl, weights=a.d_fcl * a.d_fcl + a.d_fcl,
                      activations=a.d_fcl),
            LayerSpec(name="FCL3", kind="fc", macs=a.d_fcl * out, weights=a.d_fcl * out + out, activations=out),
        ]

    def layer_bits(self, bits: Sequence[int]) -> list[int]:
        """The weight bits of every layer :meth:`describe` lists, from those of [CONV, FCL1, FCL2, FCL3]."""
        return list(bits)

    def energy(self, arch: Mapping[str, Any] | PrecoderArch, bits: Sequence[int], activation_bits: int = 16,
               counting: Counting = "paper") -> EnergyBreakdown:
        """One inference with ``bits`` for [CONV, FCL1, FCL2, FCL3]: eq. 7 on the layers :meth:`describe` lists
        (``paper``), or on the weight layers plus the counted weightless operations as one more 16-bit layer,
        ``weightless`` (``implemented``; module docstring). ``paper`` is the default because the breakdowns a
        search row and a package's manifest carry are eqs. 7-11's; what shows an energy names its counting."""
        if counting == "paper":
            return dnn_energy(self.describe(arch), self.layer_bits(bits), activation_bits)
        weight_layers = self.describe(arch)[: len(self.layer_names)]
        return implemented_dnn_energy(weight_layers, list(bits), activation_bits, self.weightless_operations(arch))

    def weightless_operations(self, arch: Mapping[str, Any] | PrecoderArch) -> OperationCount:
        """The operations of one inference of the exported graph outside the weight layers, counted while it runs
        (:func:`_weightless_operations`)."""
        return _weightless_operations(self, self.arch(arch))

    def build(self, arch: Mapping[str, Any] | PrecoderArch) -> Any:
        from edgejoule.plugins.precoding.precoder_net import PrecoderCNN

        a = self.arch(arch)
        return PrecoderCNN(a, outputs=self.outputs(a))


@functools.lru_cache(maxsize=64)
def _weightless_operations(family: PrecoderCNNFamily, arch: PrecoderArch) -> OperationCount:
    """The exported graph (:meth:`PrecoderCNN.served`: input scaling, the net's :meth:`forward_real`, output power
    scaling) run once on a batch of one under :class:`edgejoule.plugins.energy.op_counter.OperationCounter`, the
    net's submodules (its weight layers, priced by eqs. 7-11) skipped. Cached per family and architecture: every
    candidate of a search with the same architecture has the same count, whatever its bits. The constants of
    the scalings are placeholders: a count depends on shapes only."""
    import torch

    from edgejoule.plugins.energy.op_counter import OperationCounter

    with torch.device("meta"):  # shapes only: no weights allocated or multiplied
        model = family.build(arch)
    planes = torch.zeros(1, 2, arch.n_u, arch.n_t, device="meta")
    with torch.no_grad(), OperationCounter(list(model.children())) as counter:
        model.eval().served(planes, factor=1.0, amplitude=1.0)
    return counter.count


@hookimpl
def register_models(register) -> None:
    register("precoder_cnn", PrecoderCNNFamily())
