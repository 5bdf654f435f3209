r"""The precoder CNN template with the optimal beamforming structure as its output layer, as a model family.

The sum-rate-optimal precoder of the MISO downlink under a total power budget has a known form (Bjornson,
Bengtsson, Ottersten, "Optimal multiuser transmit beamforming: a difficult problem with a simple solution
structure", IEEE Signal Processing Magazine 31(4), 2014, eq. 21; used as a network's output layer by Xia,
Zheng, Ng, Wong, Shi, Shi, "A deep learning framework for optimization of MISO downlink beamforming", IEEE
Trans. Commun. 68(3), 2020, the "BNN"): with user powers :math:`p_k \ge 0` and virtual uplink powers
:math:`q_k \ge 0`, :math:`\sum_k p_k = \sum_k q_k = P_{max}`,

.. math::

    w_k = \sqrt{p_k}\, \frac{A^{-1} h_k}{\|A^{-1} h_k\|}, \qquad
    A = \sigma^2 I_{N_T} + \sum_j q_j h_j h_j^H .

Every WMMSE fixed point has this form, so the network only has to find the 2 N_U numbers (p, q) of a
channel, not the 2 N_T N_U entries of W. By the push-through identity the N_T x N_T inverse is an N_U x N_U
one (with ``H`` [N_U, N_T] whose row u is :math:`h_u^H`, noise 1):

.. math::

    A^{-1} H^H = H^H (I_{N_U} + \mathrm{diag}(q)\, H H^H)^{-1}.

Layers: the Fig. 1 template of :mod:`edgejoule.plugins.precoding.precoder_cnn` (CONV, FCL1, FCL2 as there) with FCL3 of width
2 N_U: the logits of :math:`p / P_{max}` and :math:`q / P_{max}` (softmax), then the structure above
(``STRUCT``, no weights, computed at 16 bits). At p = q = P_max / N_U it is regularized zero forcing with
equal powers (``edgejoule.plugins.precoding.zf``, ``rzf``), which the network starts near and learns to leave.

Energy: the four weight layers as in the template; ``STRUCT`` is one more layer of the energy model with no
weights, its real multiplications (:func:`structure_ops`, the counting of paper eq. 13) as MACs and W's
2 N_T N_U entries as its output activations, always at 16 bits.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from edgejoule.energy.accelerator import LayerSpec
from edgejoule.hookspecs import hookimpl
from edgejoule.plugins.precoding.precoder_arch import PrecoderArch
from edgejoule.plugins.precoding.precoder_cnn import PrecoderCNNFamily

STRUCTURE_BITS = 16


def structure_ops(n_t: int, n_u: int) -> int:
    """Real multiplications of the structure layer (divisions, square roots and the softmax's exponentials
    not counted, as in the paper's eq. 13 for ZF): :math:`G = H H^H` (4 N_U^2 N_T), :math:`\\mathrm{diag}(q) G`
    (2 N_U^2), Gauss-Jordan inversion of the complex N_U x N_U matrix (8 N_U^2 + 8 N_U^3: per pivot, the pivot
    row times its inverse and the update of every row), :math:`H^H X` (4 N_U^2 N_T), the column norms and the
    scaling of W (4 N_T N_U)."""
    return 8 * n_u**2 * n_t + 2 * n_u**2 + 8 * n_u**2 + 8 * n_u**3 + 4 * n_t * n_u


class PrecoderStructuredFamily(PrecoderCNNFamily):
    name = "precoder_structured"

    def outputs(self, arch: PrecoderArch) -> int:
        """Width of FCL3: the logits of p and q."""
        return 2 * arch.n_u

    def describe(self, arch: Mapping[str, Any] | PrecoderArch) -> list[LayerSpec]:
        """The four weight layers, then the structure layer (computed at 16 bits whatever the search picks)."""
        a = self.arch(arch)
        return [*super().describe(a), LayerSpec(name="STRUCT", kind="structure", macs=structure_ops(a.n_t, a.n_u),
                                                weights=0, activations=2 * a.n_t * a.n_u)]

    def layer_bits(self, bits: Sequence[int]) -> list[int]:
        """``bits`` for [CONV, FCL1, FCL2, FCL3], then 16 for the structure."""
        return [*bits, STRUCTURE_BITS]

    def build(self, arch: Mapping[str, Any] | PrecoderArch) -> Any:
        from edgejoule.plugins.precoding.precoder_structured_net import PrecoderStructured

        a = self.arch(arch)
        return PrecoderStructured(a, outputs=self.outputs(a))


@hookimpl
def register_models(register) -> None:
    register("precoder_structured", PrecoderStructuredFamily())
