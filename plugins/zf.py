r"""Zero-forcing precoding, the cheapest classical baseline.

.. math::

    V = H^H (H H^H)^{-1}, \qquad W = \sqrt{P_{max}}\, V / \|V\|_F

(channel inversion, then **total-power** normalization: one scale for all users, so the precoder spends
exactly :math:`P_{max}` and interference stays nulled; used everywhere in edgejoule).

Operation count (precoder-compression paper, eq. 13): :math:`N_c = 8 N_U^2 N_T + \frac{8}{3} N_U^3`
real multiplications, energy by eq. 14.
"""

from __future__ import annotations

import numpy as np

from core.hookspecs import hookimpl
from core.interfaces import BaselineResult
from core.tasks.precoding import scale_to_power


def zf_op_count(n_t: int, n_u: int) -> float:
    """Eq. 13."""
    return 8 * n_u**2 * n_t + 8 / 3 * n_u**3


def zf_precoder(H: np.ndarray, p_max: np.ndarray | float) -> np.ndarray:
    """Batched ZF: ``H`` [B, N_U, N_T] -> ``W`` [B, N_T, N_U] with total power ``p_max``."""
    H = np.asarray(H, dtype=np.complex128)
    Hh = np.conj(np.swapaxes(H, -1, -2))
    V = Hh @ np.linalg.inv(H @ Hh)
    return scale_to_power(V, np.broadcast_to(np.asarray(p_max, dtype=float), H.shape[:1]))


class ZeroForcing:
    name = "zf"
    task = "precoding"

    def run(self, H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> BaselineResult:
        W = zf_precoder(H, p_max)
        n_u, n_t = H.shape[-2:]
        return BaselineResult(output=W, iterations=None, macs_per_sample=np.full(len(W), zf_op_count(n_t, n_u)))

    def op_count(self, n_t: int, n_u: int, iterations: float | None = None) -> float:
        return zf_op_count(n_t, n_u)


@hookimpl
def register_baselines(register) -> None:
    register("zf", ZeroForcing())
