r"""Deep-unfolded MIMO detectors (model family ``unfolded``): PGD-Net and ADMM-Net.

Both unfold K iterations (default 5) of a classical solver of :math:`\min_{x \in \mathcal{C}} \|y - Hx\|^2`
on the real-valued model of :mod:`edgejoule.tasks.detection` (n = 2N_R rows, m = 2N_U columns), each iteration a
layer with its own learnable scalars, trained on the MSE to the transmitted symbols (KAQ paper,
arXiv 2505.12736, section on the system model; initial values :math:`\eta_k = 0.1, \lambda_k = 0.05`).

The constellation projection is the soft PAM projector with a learnable temperature :math:`t_k`:

.. math::

    \psi_t(v) = -(L-1)a + a \sum_{j=1}^{L-1} \Big(1 + \tanh\frac{v - c_j}{t}\Big)

(L PAM levels spaced 2a, thresholds :math:`c_j` at the midpoints; :math:`a\tanh(v/t)` for QPSK; the hard
slicer as :math:`t \to 0`).

**PGD-Net** (projected gradient descent), 2 parameters per layer (:math:`\eta_k, t_k`):

.. math::

    v_k = x_k + \eta_k H^T (y - H x_k), \qquad x_{k+1} = \psi_{t_k}(v_k), \qquad x_0 = 0

**ADMM-Net** (inexact ADMM after Kim & Park, IEEE TWC 2021: the x-update is one linearized gradient step
instead of a matrix inverse), 5 parameters per layer (step :math:`\alpha_k` = 0.1, penalty
:math:`\lambda_k` = 0.05, over-relaxation :math:`\gamma_k` = 1, dual step :math:`\beta_k` = 1, :math:`t_k`):

.. math::

    v_k &= x_k - \alpha_k\big(H^T(H x_k - y) + \lambda_k (x_k - z_k + u_k)\big), \quad x_{k+1} = v_k \\
    r_k &= \gamma_k v_k + (1 - \gamma_k) z_k, \quad z_{k+1} = \psi_{t_k}(r_k + u_k), \quad
    u_{k+1} = u_k + \beta_k (r_k - z_{k+1})

and the detector outputs :math:`z_K`. The exact parametrization of Kim & Park could not be checked here; this
is our reading of "inexact ADMM with 5 parameters per layer", stated as the project's design.

:math:`v_k` is each layer's **activation**: the tensor the quantizers of :mod:`edgejoule.plugins.detection.kaq` act on.

Energy description (per layer, :mod:`edgejoule.energy.accelerator` conventions): MACs :math:`2nm` for
:math:`H x` and :math:`H^T r` plus m (PGD) or 5m (ADMM) scalings (PGD's step; ADMM's lambda, alpha, gamma,
1 - gamma and beta); weights 2 or 5; activations: the residual (n), the gradient (m) and the state (m for PGD;
x, z, u for ADMM). Layer 1 also loads H and y (nm + n).

Energy under the two countings (:mod:`edgejoule.energy.counting`, :meth:`UnfoldedFamily.energy`):

- ``paper``: eqs. 7-11 on the layers :meth:`UnfoldedFamily.describe` lists (the products with H, the step
  scalings and the states above), nothing else.
- ``implemented``: the same layers (they are the iterations' linear algebra; the net never forms
  :math:`H^T H` or :math:`H^T y`, it applies H and :math:`H^T` each iteration, which ``describe`` lists), plus
  what ``describe`` leaves out, the K projections :math:`\psi_{t_k}` as they run (:math:`e^{\log t_k}`, per
  entry and threshold a subtraction, a division by t, a tanh and a sum, then a scaling by a), counted by
  :class:`edgejoule.plugins.energy.op_counter.OperationCounter` and priced at 16 bits as one ``weightless``
  layer.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

from edgejoule.energy.accelerator import EnergyBreakdown, LayerSpec, dnn_energy
from edgejoule.energy.counting import Counting, OperationCount, implemented_dnn_energy
from edgejoule.hookspecs import hookimpl
from edgejoule.plugins.detection.unfolded_arch import UnfoldedArch, describe


class UnfoldedFamily:
    name = "unfolded"
    task = "detection"

    def arch(self, arch: Mapping[str, Any] | UnfoldedArch) -> UnfoldedArch:
        return arch if isinstance(arch, UnfoldedArch) else UnfoldedArch.model_validate(dict(arch))

    def describe(self, arch: Mapping[str, Any] | UnfoldedArch) -> list[LayerSpec]:
        return describe(self.arch(arch))

    def build(self, arch: Mapping[str, Any] | UnfoldedArch) -> Any:
        from edgejoule.plugins.detection.unfolded_net import build_net

        return build_net(self.arch(arch))

    def energy(self, arch: Mapping[str, Any] | UnfoldedArch, bits: Sequence[int], activation_bits: int = 16,
               counting: Counting = "implemented") -> EnergyBreakdown:
        """One detection with ``bits`` per layer: eqs. 7-11 on the layers :meth:`describe` lists (``paper``), plus
        the counted projections as one 16-bit ``weightless`` layer (``implemented``; module docstring)."""
        layers = self.describe(arch)
        if counting == "paper":
            return dnn_energy(layers, list(bits), activation_bits)
        return implemented_dnn_energy(layers, list(bits), activation_bits, self.weightless_operations(arch))

    def weightless_operations(self, arch: Mapping[str, Any] | UnfoldedArch) -> OperationCount:
        """The operations of one detection that :meth:`describe` does not list, counted while they run."""
        return _weightless_operations(self.arch(arch))


@functools.lru_cache(maxsize=64)
def _weightless_operations(arch: UnfoldedArch) -> OperationCount:
    """Each layer's projection run once on a batch of one under the op counter (the step sizes and
    temperatures are placeholders: a count depends on shapes only)."""
    import torch

    from edgejoule.plugins.detection.unfolded_net import build_net
    from edgejoule.plugins.energy.op_counter import OperationCounter

    net = build_net(arch).eval()
    v = torch.zeros(1, 2 * arch.n_u)
    with torch.no_grad(), OperationCounter([]) as counter:
        for projection in net.proj:
            projection(v)
    return counter.count


@hookimpl
def register_models(register) -> None:
    register("unfolded", UnfoldedFamily())


@hookimpl
def register_commands(cli) -> None:
    from edgejoule.plugins.detection.detect_cli import detect_command

    cli.command("detect")(detect_command)
