r"""Maximum-ratio transmission (matched-filter) precoding, a classical baseline for edgejoule.

edgejoule ships its own ``mrt``; this example registers its method as ``mrt-example``, since two plugins
may not register one name (edgejoule names both when they do).

.. math::

    W = \sqrt{P_{max}}\, H^H / \|H\|_F

Each user's beam is its own channel :math:`h_u` (column u of :math:`H^H`): the beam that maximizes that
user's array gain and ignores everyone else. One scale for all users spends exactly the total power budget
:math:`P_{max}`, as edgejoule's zf does. Nothing cancels the interference between users, so at high SNR the
sum rate saturates below zero forcing's.

Operation count, in real multiplications as edgejoule's zf and rzf count them: the conjugate transpose is
free; the squared norm takes :math:`2 N_T N_U` (:math:`|z|^2 = \Re(z)^2 + \Im(z)^2`) and the scaling
:math:`2 N_T N_U` (a real number times each complex entry), so :math:`N_c = 4 N_T N_U`. The one square root
and division are left out, as eq. 13 leaves out ZF's.
"""

from __future__ import annotations

import numpy as np

from edgejoule import BaselineResult, hookimpl


def mrt_op_count(n_t: int, n_u: int) -> float:
    return 4 * n_t * n_u


def mrt_precoder(H: np.ndarray, p_max: np.ndarray | float) -> np.ndarray:
    """Batched MRT: ``H`` [B, N_U, N_T] -> ``W`` [B, N_T, N_U] with total power ``p_max``."""
    H = np.asarray(H, dtype=np.complex128)
    W = np.conj(np.swapaxes(H, -1, -2))
    power = np.broadcast_to(np.asarray(p_max, dtype=float), H.shape[:1])
    return W * np.sqrt(power / np.sum(np.abs(W) ** 2, axis=(-2, -1)))[:, None, None]


class MaximumRatioTransmission:
    name = "mrt-example"
    task = "precoding"

    def run(self, H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> BaselineResult:
        W = mrt_precoder(H, p_max)
        n_u, n_t = H.shape[-2:]
        return BaselineResult(output=W, iterations=None, macs_per_sample=np.full(len(W), mrt_op_count(n_t, n_u)))

    def op_count(self, n_t: int, n_u: int, iterations: float | None = None) -> float:
        return mrt_op_count(n_t, n_u)


@hookimpl
def register_baselines(register) -> None:
    register("mrt-example", MaximumRatioTransmission())
