r"""Linear precoders: zero forcing, regularized zero forcing (textbook and equal-power) and maximum-ratio
transmission, the classical baselines below WMMSE.

Every precoder except MRT lies in the span of the channels, :math:`W = H^H X` with an N_U x N_U matrix X, so
it is computed there: with :math:`K = H H^H`, the column powers are :math:`\|w_k\|^2 = [X^H K X]_{kk}` and
scaling X costs N_U^2 instead of N_T N_U products.

- ZF (``zf``): :math:`X = K^{-1}`, one total-power scaling :math:`W \leftarrow \sqrt{P_{max}}\,W/\|W\|_F`
  (interference nulled, exactly :math:`P_{max}` spent).
- Textbook RZF (``rzf``; Peel, Hochwald, Swindlehurst, IEEE Trans. Commun. 53(1), 2005):
  :math:`X = (K + \tfrac{N_U \sigma^2}{P_{max}} I)^{-1}`, one total-power scaling.
- Equal-power RZF (``rzf-equal``): the same X with each column scaled to :math:`P_{max}/N_U`; it is the
  optimal beamforming structure (``edgejoule.plugins.precoding.precoder_structured``) at
  p = q = P_max / N_U, the point the structured network starts from.
- MRT (``mrt``): :math:`W = \sqrt{P_{max}}\,H^H/\|H\|_F`, each user's own channel as its beam; nothing
  cancels interference, so its sum rate saturates at high SNR.

The N_U x N_U systems are solved by Gauss-Jordan elimination without pivoting (:func:`gauss_jordan_solve`):
:math:`K + rI` and the :math:`DK + \mu I` of WMMSE have nonzero leading principal minors. Written with
ufuncs, so the ``implemented`` counting (:mod:`edgejoule.energy.counting`) reads the operations from this
very code; the ``paper`` counting is eq. 13 (ZF, and both RZFs plus their 4 N_T N_U scaling products) and
4 N_T N_U for MRT.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from edgejoule.energy.counting import OperationCount, count_call
from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import BaselineResult


def zf_op_count(n_t: int, n_u: int) -> float:
    """Eq. 13."""
    return 8 * n_u**2 * n_t + 8 / 3 * n_u**3


def gauss_jordan_solve(M: np.ndarray, B: np.ndarray) -> np.ndarray:
    """X = M^-1 B for complex ``M`` [b, n, n] and ``B`` [b, n, m], by Gauss-Jordan elimination on [M | B]
    without pivoting (for matrices whose leading principal minors are nonzero)."""
    n = M.shape[-1]
    A = np.concatenate([M, B], -1)
    for k in range(n):
        pivot = A[:, k, k]
        row = A[:, k] * (np.conj(pivot) / (pivot.real**2 + pivot.imag**2))[:, None]
        A = A - A[:, :, k][:, :, None] * row[:, None, :]
        A[:, k] = row
    return A[:, :, n:]


def gram(H: np.ndarray) -> np.ndarray:
    """K = H H^H, [b, N_U, N_U]."""
    return H @ np.conj(np.swapaxes(H, -1, -2))


def column_powers(K: np.ndarray, X: np.ndarray) -> np.ndarray:
    """||w_k||^2 of W = H^H X: the real diagonal of X^H K X, [b, N_U]."""
    KX = K @ X
    return np.sum(X.real * KX.real + X.imag * KX.imag, -2)


def at_total_power(K: np.ndarray, X: np.ndarray, p_max: np.ndarray) -> np.ndarray:
    """X scaled so that W = H^H X spends exactly ``p_max`` [b]."""
    return X * np.sqrt(p_max / np.sum(column_powers(K, X), -1))[:, None, None]


def at_equal_powers(K: np.ndarray, X: np.ndarray, p_max: np.ndarray) -> np.ndarray:
    """X scaled so that every column of W = H^H X spends ``p_max / N_U``."""
    return X * np.sqrt(p_max[:, None] / X.shape[-1] / column_powers(K, X))[:, None, :]


def zf_coefficients(K: np.ndarray, p_max: np.ndarray) -> np.ndarray:
    eye = np.broadcast_to(np.eye(K.shape[-1], dtype=K.dtype), K.shape)
    return at_total_power(K, gauss_jordan_solve(K, eye), p_max)


def regularized_inverse(K: np.ndarray, noise_power: np.ndarray, p_max: np.ndarray) -> np.ndarray:
    """(K + N_U sigma^2 / P_max I)^-1."""
    n_u = K.shape[-1]
    eye = np.eye(n_u)
    return gauss_jordan_solve(K + (n_u * noise_power / p_max)[:, None, None] * eye, np.broadcast_to(eye + 0j, K.shape))


def precode(H: np.ndarray, X: np.ndarray) -> np.ndarray:
    """W = H^H X."""
    return np.conj(np.swapaxes(H, -1, -2)) @ X


def _per_sample(value: np.ndarray | float, H: np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=float), H.shape[:1])


def zf_precoder(H: np.ndarray, p_max: np.ndarray | float) -> np.ndarray:
    """Batched ZF: ``H`` [B, N_U, N_T] -> ``W`` [B, N_T, N_U] with total power ``p_max``."""
    return precode(H, zf_coefficients(gram(H), _per_sample(p_max, H)))


def rzf_precoder(H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> np.ndarray:
    """Batched textbook RZF: one total-power scaling."""
    K, p = gram(H), _per_sample(p_max, H)
    return precode(H, at_total_power(K, regularized_inverse(K, _per_sample(noise_power, H), p), p))


def rzf_equal_precoder(H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> np.ndarray:
    """Batched RZF with each column at P_max / N_U."""
    K, p = gram(H), _per_sample(p_max, H)
    return precode(H, at_equal_powers(K, regularized_inverse(K, _per_sample(noise_power, H), p), p))


def mrt_precoder(H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> np.ndarray:
    """Batched MRT with total power ``p_max``."""
    W = np.conj(np.swapaxes(H, -1, -2))
    power = np.sum(np.sum(W.real**2 + W.imag**2, -1), -1)
    return W * np.sqrt(_per_sample(p_max, H) / power)[:, None, None]


def probe_channel(n_t: int, n_u: int) -> np.ndarray:
    """A channel of one sample to count on: the operations depend on the shapes, not the values."""
    rng = np.random.default_rng(0)
    return rng.normal(size=(1, n_u, n_t)) + 1j * rng.normal(size=(1, n_u, n_t))


class LinearPrecoder:
    """A one-shot precoder: the same operations on every channel."""

    task = "precoding"

    def __init__(self, name: str, precoder: Callable[..., np.ndarray], paper_count: Callable[[int, int], float]) -> None:
        self.name, self._precoder, self._paper_count = name, precoder, paper_count
        # the operations per (N_T, N_U), counted once: they depend on the shapes, not on the channel
        self._counted: dict[tuple[int, int], OperationCount] = {}

    def precode(self, H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> np.ndarray:
        """The precoders alone, as the edge agent serves the method: what :meth:`run` computes, uncounted."""
        return self._precoder(H, noise_power, p_max)

    def run(self, H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> BaselineResult:
        W = self._precoder(H, noise_power, p_max)
        n_u, n_t = H.shape[-2:]
        ops = self._counted.get((n_t, n_u))
        if ops is None:
            ops = self._counted[n_t, n_u] = count_call(self._precoder, H[:1], noise_power=np.ravel(noise_power)[:1],
                                                        p_max=np.ravel(p_max)[:1])
        return BaselineResult(output=W, iterations=None, macs_per_sample=np.full(len(W), self._paper_count(n_t, n_u)),
                              operations=np.tile(ops.as_row(), (len(W), 1)))

    def op_count(self, n_t: int, n_u: int, iterations: float | None = None) -> float:
        """The ``paper`` counting."""
        return self._paper_count(n_t, n_u)

    def operations(self, n_t: int, n_u: int, iterations: float | None = None,
                   bisection_steps: float | None = None) -> OperationCount:
        """The ``implemented`` counting of one run, read from :meth:`run`'s code on a probe channel."""
        return count_call(self._precoder, probe_channel(n_t, n_u), noise_power=np.ones(1), p_max=np.ones(1))


def _zf(H: np.ndarray, noise_power: np.ndarray | float, p_max: np.ndarray | float) -> np.ndarray:
    return zf_precoder(H, p_max)


def _rzf_paper_count(n_t: int, n_u: int) -> float:
    return zf_op_count(n_t, n_u) + 4 * n_t * n_u


def _mrt_paper_count(n_t: int, n_u: int) -> float:
    """|H|_F^2 (2 N_T N_U) and the scaling (2 N_T N_U)."""
    return 4 * n_t * n_u


@hookimpl
def register_baselines(register) -> None:
    register("zf", LinearPrecoder("zf", _zf, zf_op_count))
    register("rzf", LinearPrecoder("rzf", rzf_precoder, _rzf_paper_count))
    register("rzf-equal", LinearPrecoder("rzf-equal", rzf_equal_precoder, _rzf_paper_count))
    register("mrt", LinearPrecoder("mrt", mrt_precoder, _mrt_paper_count))
