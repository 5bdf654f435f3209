r"""Downlink multi-user MISO precoding: SINR and sum rate.

Reference: precoder-compression paper, eqs. 2-5. A base station with N_T antennas serves N_U single-antenna
users; user u receives :math:`y_u = h_u^H \sum_j w_j s_j + n_u`.

.. math::

    \mathrm{SINR}_u &= \frac{|h_u^H w_u|^2}{\sum_{j \ne u} |h_u^H w_j|^2 + \sigma^2}   && (2) \\
    R(W) &= \sum_u \log_2(1 + \mathrm{SINR}_u), \quad \sum_u \|w_u\|^2 \le P_{max}       && (3)-(5)

Array conventions, used everywhere in edgejoule:

- ``H``: complex, shape ``[batch, N_U, N_T]``; row u is :math:`h_u^H`, so ``H @ W`` gives
  :math:`[h_u^H w_j]_{u,j}`.
- ``W``: complex, shape ``[batch, N_T, N_U]``; column u is user u's precoder :math:`w_u`.
- ``noise_power``: scalar or shape ``[batch]``.

The functions take an array namespace ``xp`` (numpy by default; pass ``torch``) so the training plugins use
this very formula on tensors, with gradients, instead of a copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any


def _per_sample(value: Array) -> Array:
    """Lift a per-sample scalar ([batch]) to broadcast against [batch, N_U]."""
    return value[..., None] if getattr(value, "ndim", 0) else value


def sinr(H: Array, W: Array, noise_power: Array, xp: Any = np) -> Array:
    """Eq. 2 for every user of every sample: shape ``[batch, N_U]``."""
    gains = xp.abs(H @ W) ** 2  # [h_u^H w_j]; matmul, not einsum: numpy's einsum is 8x slower on the agent's path
    signal = xp.einsum("buu->bu", gains)
    interference = xp.sum(gains, -1) - signal
    return signal / (interference + _per_sample(noise_power))


def sum_rate(H: Array, W: Array, noise_power: Array, xp: Any = np) -> Array:
    """Eq. 3: sum over users of log2(1 + SINR), bit/s/Hz, shape ``[batch]``."""
    return xp.sum(xp.log2(1.0 + sinr(H, W, noise_power, xp)), -1)


def total_power(W: Array, xp: Any = np) -> Array:
    r"""Transmit power :math:`\sum_u \|w_u\|^2` per sample, shape ``[batch]``."""
    return xp.sum(xp.abs(W) ** 2, (-2, -1))


def scale_to_power(W: Array, p_max: Array, xp: Any = np) -> Array:
    """Scale each sample's precoder so that it spends exactly ``p_max`` (eq. 5 met with equality)."""
    scale = xp.sqrt(p_max / total_power(W, xp))
    return W * scale[..., None, None]


def average_snr_db(H: Array, p_max: Array, noise_power: Array) -> float:
    r"""A site's average SNR: the mean over users and samples of :math:`10\log_{10}(P_{max}\|h_u\|^2/\sigma^2)`.

    Each term is the SNR of one user served alone at full power with maximum-ratio transmission (array gain
    included); averaging in dB keeps the few users next to the BS from dominating the figure.
    """
    H = np.asarray(H)
    p = np.asarray(p_max, dtype=float).reshape(-1, 1)
    noise = np.asarray(noise_power, dtype=float).reshape(-1, 1)
    per_user = p * np.sum(np.abs(H) ** 2, -1) / noise
    return float(np.mean(10 * np.log10(per_user)))
