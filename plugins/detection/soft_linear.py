r"""Bit LLRs of ZF and LMMSE with each stream's own reliability: the classical detectors' soft output for the
coded evaluation.

On the real-valued model :math:`y = Hx + n` of :mod:`edgejoule.tasks.detection` (symbol energy 1/2 and noise
variance :math:`\sigma^2/2` per real dimension), with :math:`G = H^T H + \delta\sigma^2 I` (:math:`\delta = 0`
for ZF, 1 for LMMSE), :math:`M = G^{-1}` and :math:`\hat x = M H^T y`, stream i's post-detection SINR is
the standard one of linear receivers (e.g. Tse and Viswanath, *Fundamentals of Wireless Communication*, 2005,
ch. 8, the linear MMSE receiver):

.. math::

    \mathrm{SNR}_i^{\mathrm{ZF}} = \frac{1}{\sigma^2 M_{ii}}, \qquad
    \mathrm{SINR}_i^{\mathrm{LMMSE}} = \frac{1}{\sigma^2 M_{ii}} - 1 = \frac{\mu_i}{1 - \mu_i},
    \quad \mu_i = [M H^T H]_{ii} = 1 - \sigma^2 M_{ii}.

LMMSE's estimate is biased (:math:`E[\hat x_i \mid x_i] = \mu_i x_i`); it is scaled to :math:`\hat x_i / \mu_i`,
and the residual interference treated as Gaussian. The max-log LLRs of :func:`edgejoule.tasks.detection.maxlog_llrs`
then take :math:`v_i = 1/\mathrm{SINR}_i` in place of the noise variance: the common-variance rule that the
learned detectors get (:math:`v_i = \sigma^2` for every stream) overstates how reliable a stream of an
ill-conditioned channel is, which a channel decoder pays for. The inverse's diagonal costs a solve with m more
right-hand sides than the hard decision's; the detectors' counted energy is that of the hard decision.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgejoule.plugins.detection.detectors import normal_equations
from edgejoule.tasks.detection import Constellation, DetectionBatch, maxlog_llrs


def linear_llrs(H: np.ndarray, y: np.ndarray, noise_var: np.ndarray, const: Constellation,
                regularized: bool) -> np.ndarray:
    """float32 [B, 2N_U, bits_per_dim] LLRs of the module docstring for ``H`` [B, n, m], ``y`` [B, n] and the
    complex noise variance ``noise_var`` [B]: LMMSE if ``regularized``, else ZF."""
    nv = np.asarray(noise_var, np.float64).reshape(-1, 1)
    Ht, gram = normal_equations(H, nv if regularized else None)
    m = gram.shape[-1]
    rhs = np.concatenate([Ht @ np.asarray(y, np.float64)[..., None], np.broadcast_to(np.eye(m), gram.shape)], -1)
    solution = np.linalg.solve(gram, rhs)
    x_hat, spread = solution[..., 0], nv * np.diagonal(solution[..., 1:], axis1=-2, axis2=-1)  # sigma^2 M_ii
    if not regularized:
        return maxlog_llrs(const, x_hat, spread)
    mu = 1.0 - spread
    return maxlog_llrs(const, x_hat / mu, spread / mu)


def linear_soft(const: Constellation, regularized: bool) -> Callable[[DetectionBatch], np.ndarray]:
    """``llrs(batch)`` for :func:`edgejoule.tasks.detection.coded_error_rates`."""
    return lambda b: linear_llrs(b.H, b.y, b.noise_var, const, regularized)
