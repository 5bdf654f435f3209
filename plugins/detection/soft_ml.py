r"""Max-log ML bit LLRs: the soft-output reference for the coded evaluation of detectors.

On the real-valued model :math:`y = Hx + n` of :mod:`edgejoule.tasks.detection` (noise variance
:math:`\sigma^2/2` per real dimension), the likelihood of a candidate is
:math:`p(y \mid x) \propto \exp(-\|y - Hx\|^2 / \sigma^2)`, and the max-log approximation of the LLR of bit j
of real symbol k keeps the best candidate on each side (Hochwald and ten Brink, "Achieving near-capacity on a
multiple-antenna channel", IEEE Trans. Commun. 51(3), 2003, the max-log form of their a posteriori LLR):

.. math::

    \ell_{k,j} = \frac{1}{\sigma^2}\Big(\min_{x:\, b_{k,j}(x) = 0} \|y - Hx\|^2
                 - \min_{x:\, b_{k,j}(x) = 1} \|y - Hx\|^2\Big)

(positive means bit 1, the sign of :func:`edgejoule.tasks.detection.maxlog_llrs`), over all
:math:`|\mathcal{C}|^{N_U}` candidates. Its sign is the exhaustive ML decision's bit; unlike LLRs made from a
detector's symbol estimates with the noise variance as every stream's reliability, it weighs each bit by how
far the second-best candidate is, which is what a channel decoder needs. So it bounds what any detector's
soft output can give a max-log decoder, and the learned detectors' coded BLER is measured against it.
"""

from __future__ import annotations

import numpy as np

from edgejoule.plugins.detection.detectors import ml_candidates
from edgejoule.tasks.detection import Constellation


def candidate_bits(const: Constellation, n_u: int) -> np.ndarray:
    """bool [candidates, 2N_U, bits_per_dim]: the Gray bits of every real symbol of every candidate of
    :func:`ml_candidates` (in its order)."""
    cand = ml_candidates(const, n_u)
    level = np.rint(cand / const.scale + const.levels_per_dim - 1).astype(int) // 2  # (2i - L + 1) * scale -> i
    return const.gray[level].astype(bool)


def ml_llrs(H: np.ndarray, y: np.ndarray, noise_var: np.ndarray, const: Constellation,
            chunk: int = 256) -> np.ndarray:
    """float32 [B, 2N_U, bits_per_dim] LLRs of the module docstring for ``H`` [B, n, m], ``y`` [B, n] and the
    complex noise variance ``noise_var`` [B], in chunks of ``chunk`` detections to bound memory."""
    n_u = H.shape[-1] // 2
    cand, bits = ml_candidates(const, n_u), candidate_bits(const, n_u)
    ones = bits[None]  # [1, C, m, bits]
    out = np.empty((len(H), 2 * n_u, const.bits_per_dim), np.float32)
    for s in range(0, len(H), chunk):
        Hc, yc = H[s : s + chunk], y[s : s + chunk]
        dist = np.sum((yc[:, None, :] - cand @ np.swapaxes(Hc, -1, -2)) ** 2, -1)[:, :, None, None]  # [b, C, 1, 1]
        best0 = np.where(ones, np.inf, dist).min(1)
        best1 = np.where(ones, dist, np.inf).min(1)
        out[s : s + chunk] = (best0 - best1) / np.asarray(noise_var[s : s + chunk], np.float64)[:, None, None]
    return out


def ml_soft(const: Constellation):
    """``llrs(batch)`` for :func:`edgejoule.tasks.detection.coded_error_rates`."""
    return lambda b: ml_llrs(b.H, b.y, b.noise_var, const)
