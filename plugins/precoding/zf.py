r"""Zero-forcing precoding, the cheapest classical baseline.

.. math::

    V = H^H (H H^H)^{-1}, \qquad W = \sqrt{P_{max}}\, V / \|V\|_F

(channel inversion, then **total-power** normalization: one scale for all users, so the precoder spends
exactly :math:`P_{max}` and interference stays nulled; used everywhere in edgejoule).

Operation count (precoder-compression paper, eq. 13): :math:`N_c = 8 N_U^2 N_T + \frac{8}{3} N_U^3`
real multiplications, energy by eq. 14.

Regularized zero forcing with equal user powers (``rzf``; Peel, Hochwald, Swindlehurst, IEEE Trans.
Commun. 53(1), 2005, for the regularization :math:`N_U \sigma^2 / P_{max}`),

.. math::

    v_k = [H^H (H H^H + \tfrac{N_U \sigma^2}{P_{max}} I)^{-1}]_{:,k}, \qquad
    w_k = \sqrt{P_{max}/N_U}\; v_k / \|v_k\|,

is the optimal beamforming structure (``edgejoule.plugins.precoding.precoder_structured``) at p = q = P_max / N_U: the point the
structured network starts from, and the classical reference it has to beat. Operations: eq. 13 plus the
column norms and scaling (4 N_T N_U).
"""

from __future__ import annotations

import numpy as np

from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import BaselineResult
from edgejoule.tasks.precoding import scale_to_power


def zf_op_count(n_t: int, n_u: int) -> float:
    """Eq. 13."""
    return 8 * n_u**2 * n_t + 8 / 3 * n_u**3


def zf_precoder(H: np.ndarray, p_max: np.ndarray | float) -> np.ndarray:
    """Batched ZF: ``H`` [B, N_U, N_T] -> ``W`` [B, N_T, N_U] with total power ``p_max``."""
    H = np.asarray(H, dtype=np.complex128)
    Hh = np.conj(np.swapaxes(H, -1, -2))
    V = Hh @ np.linalg.inv(H @ Hh)
    return scale_to_power(V, np.broadcast_to(np.asarray(p_max, dtype=float), H.shape[:1]))


def rzf_op_count(n_t: int, n_u: int) -> float:
    return zf_op_count(n_t, n_u) + 4 * n_t * n_u


def rzf_precoder(H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> np.ndarray:
    """Batched RZF with equal user powers: ``H`` [B, N_U, N_T] -> ``W`` [B, N_T, N_U], each column at P_max/N_U."""
    H = np.asarray(H, dtype=np.complex128)
    n_u = H.shape[-2]
    shape = H.shape[:1] + (1, 1)
    noise = np.broadcast_to(np.asarray(noise_power, dtype=float), H.shape[:1]).reshape(shape)
    power = np.broadcast_to(np.asarray(p_max, dtype=float), H.shape[:1]).reshape(shape)
    Hh = np.conj(np.swapaxes(H, -1, -2))
    V = Hh @ np.linalg.inv(H @ Hh + n_u * noise / power * np.eye(n_u))
    return V * np.sqrt(power / n_u) / np.linalg.norm(V, axis=-2, keepdims=True)


class ZeroForcing:
    name = "zf"
    task = "precoding"

    def run(self, H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> BaselineResult:
        W = zf_precoder(H, p_max)
        n_u, n_t = H.shape[-2:]
        return BaselineResult(output=W, iterations=None, macs_per_sample=np.full(len(W), zf_op_count(n_t, n_u)))

    def op_count(self, n_t: int, n_u: int, iterations: float | None = None) -> float:
        return zf_op_count(n_t, n_u)


class RegularizedZeroForcing:
    name = "rzf"
    task = "precoding"

    def run(self, H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> BaselineResult:
        W = rzf_precoder(H, noise_power, p_max)
        n_u, n_t = H.shape[-2:]
        return BaselineResult(output=W, iterations=None, macs_per_sample=np.full(len(W), rzf_op_count(n_t, n_u)))

    def op_count(self, n_t: int, n_u: int, iterations: float | None = None) -> float:
        return rzf_op_count(n_t, n_u)


@hookimpl
def register_baselines(register) -> None:
    register("zf", ZeroForcing())
    register("rzf", RegularizedZeroForcing())
