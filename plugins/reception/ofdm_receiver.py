r"""Classical OFDM receiver: LS estimation + interpolation, LMMSE equalization, max-log demapping.

The DeepRx paper's (Honkala et al., IEEE TWC 2021, Sec. V) conventional baseline, per slot of
:mod:`edgejoule.tasks.ofdm`:

1. LS at pilots :math:`\hat H = Y/P`; linear interpolation across subcarriers on each pilot symbol (flat
   extrapolation at the band edges), then linear inter-/extrapolation in time between pilot symbols (one
   pilot symbol: held constant over the slot): :func:`edgejoule.tasks.ofdm.interpolate`.
2. Per-RE LMMSE equalization with the impairment power :math:`\sigma^2 = 1/\mathrm{SINR}` treated as white:
   :math:`\hat x = \hat H^* Y / (|\hat H|^2 + \sigma^2)`, unbiased as :math:`z = \hat x / \mu`,
   :math:`\mu = |\hat H|^2 / (|\hat H|^2 + \sigma^2)`, with post-equalization noise :math:`v = \sigma^2/|\hat H|^2`.
3. Max-log demapping per PAM dimension: :math:`\ell_b = (\min_{s: b=0}|z-s|^2 - \min_{s: b=1}|z-s|^2) / v`
   (positive means bit 1).

Operation count (real multiplications, the convention of eq. 14 of the precoder-compression paper), for
:math:`N_p` pilot REs, :math:`N_s` pilot symbols, :math:`N_d` data REs, :math:`N_{RE} = n_{sym} n_{sc}` and
L PAM levels with k bits per dimension:

.. math::

    N_c = 4 N_p + 4 N_s n_{sc} + 4 N_{RE} + N_d (4 + 1 + 4 + 2 + 2L + 2k)

(LS: a multiplication by the known :math:`1/P`; frequency then time interpolation: a complex-by-real
weight pair per RE; equalization: :math:`|\hat H|^2`, one reciprocal, :math:`\hat H^* Y`, scaling; demapping: a
squared distance per PAM level and dimension and one scaling per bit.)
"""

from __future__ import annotations

import numpy as np

from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import BaselineResult
from edgejoule.tasks.detection import maxlog_llrs
from edgejoule.tasks.ofdm import OfdmConfig, OfdmSlot, interpolate


def op_count(cfg: OfdmConfig) -> float:
    n_p = int(cfg.pilot_mask.sum())
    n_d = int(cfg.data_mask.sum())
    levels, k = cfg.const.levels_per_dim, cfg.const.bits_per_dim
    return float(
        4 * n_p + 4 * len(cfg.pilot_symbols) * cfg.n_sc + 4 * cfg.n_sym * cfg.n_sc + n_d * (11 + 2 * levels + 2 * k)
    )


def maxlog_logits(cfg: OfdmConfig, z: np.ndarray, v: np.ndarray) -> np.ndarray:
    """float32 [..., bits_per_symbol] max-log bit logits of unbiased symbol estimates ``z`` with noise var ``v``
    (real-part bits first)."""
    return np.concatenate([maxlog_llrs(cfg.const, z.real, v), maxlog_llrs(cfg.const, z.imag, v)], -1)


def receive(cfg: OfdmConfig, slot: OfdmSlot) -> np.ndarray:
    """Bit logits [B, n_sym, n_sc, bits_per_symbol] of the classical receiver."""
    h = interpolate(cfg, slot.h_ls)
    s2 = slot.impairment_var.astype(np.float64)[:, None, None]
    g = np.abs(h) ** 2
    x_hat = np.conj(h) * slot.y / (g + s2)
    mu = g / (g + s2)
    z = x_hat / np.maximum(mu, 1e-12)
    v = s2 / np.maximum(g, 1e-12)
    return maxlog_logits(cfg, z, v)


def true_channel_receive(cfg: OfdmConfig, slot: OfdmSlot) -> np.ndarray:
    """Bit logits of steps 2-3 with the true channel at every RE in place of the estimate (no estimation error):
    the bound a receiver's channel estimation is measured against."""
    s2 = slot.impairment_var.astype(np.float64)[:, None, None]
    g = np.abs(slot.h) ** 2
    return maxlog_logits(cfg, np.conj(slot.h) * slot.y / np.maximum(g, 1e-12), s2 / np.maximum(g, 1e-12))


class LsLmmseReceiver:
    name = "ls-lmmse"
    task = "ofdm"

    def run(self, cfg: OfdmConfig, slot: OfdmSlot) -> BaselineResult:
        macs = np.full(slot.y.shape[0], op_count(cfg))
        return BaselineResult(output=receive(cfg, slot), macs_per_sample=macs)

    def op_count(self, cfg: OfdmConfig) -> float:
        return op_count(cfg)


@hookimpl
def register_baselines(register) -> None:
    register("ls-lmmse", LsLmmseReceiver())
