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

Operation counts per slot (:mod:`edgejoule.energy.counting`), for :math:`N_p` pilot REs, :math:`N_s` pilot
symbols, :math:`N_d` data REs, :math:`N_{RE} = n_{sym} n_{sc}` and L PAM levels with k bits per dimension:

- ``implemented`` (the default; :meth:`LsLmmseReceiver.operations`): read from the code as it runs on
  :class:`~edgejoule.energy.counting.Counted` arrays, the LS step
  (:func:`edgejoule.tasks.ofdm.ls_estimate`, a complex division per pilot RE) included. With
  :math:`T = \min(2, N_s)` time taps,

  .. math::

      N_{mul} = 6 N_p + 4 N_s n_{sc} + 2 T N_{RE} + N_{RE}(9 + 2L + 2k), \qquad
      N_{div} = 2 N_p + N_{RE} + 1

  (the two-tap interpolations; per RE :math:`|\hat H|^2`, its reciprocal, :math:`\hat H^* Y` times it (z),
  the precision :math:`|\hat H|^2 \cdot (1/\sigma^2)` with one reciprocal per slot; a squared distance per
  level and a product with the precision per bit, each on both dimensions: :func:`equalize_demap`, the
  docstring's steps 2-3 with one division per RE), on every RE of the grid, pilots included, as the code
  runs; memory: 2 accesses per result word, which is most of its energy.
- ``paper`` (:func:`op_count`; real multiplications, the convention of eq. 14 of the precoder-compression
  paper):

  .. math::

      N_c = 4 N_p + 4 N_s n_{sc} + 4 N_{RE} + N_d (4 + 1 + 4 + 2 + 2L + 2k)

  (LS: a multiplication by the known :math:`1/P`; frequency then time interpolation: a complex-by-real
  weight pair per RE; equalization: :math:`|\hat H|^2`, one reciprocal, :math:`\hat H^* Y`, scaling;
  demapping: a squared distance per PAM level and dimension and one scaling per bit).
"""

from __future__ import annotations

import functools

import numpy as np

from edgejoule.energy.counting import OperationCount, count_call
from edgejoule.hookspecs import hookimpl
from edgejoule.interfaces import BaselineResult
from edgejoule.tasks.detection import maxlog_llrs
from edgejoule.tasks.ofdm import OfdmConfig, OfdmSlot, interpolate, ls_estimate


def op_count(cfg: OfdmConfig) -> float:
    n_p = int(cfg.pilot_mask.sum())
    n_d = int(cfg.data_mask.sum())
    levels, k = cfg.const.levels_per_dim, cfg.const.bits_per_dim
    return float(
        4 * n_p + 4 * len(cfg.pilot_symbols) * cfg.n_sc + 4 * cfg.n_sym * cfg.n_sc + n_d * (11 + 2 * levels + 2 * k)
    )


def maxlog_logits(cfg: OfdmConfig, z: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """float32 [..., bits_per_symbol] max-log bit logits of unbiased symbol estimates ``z`` whose noise variance is
    1 / ``precision`` (real-part bits first)."""
    return np.concatenate([maxlog_llrs(cfg.const, z.real, precision=precision),
                           maxlog_llrs(cfg.const, z.imag, precision=precision)], -1)


def receive(cfg: OfdmConfig, slot: OfdmSlot) -> np.ndarray:
    """Bit logits [B, n_sym, n_sc, bits_per_symbol] of the classical receiver."""
    return receive_grid(cfg, slot.y, slot.h_ls, slot.impairment_var)


def receive_grid(cfg: OfdmConfig, y: np.ndarray, h_ls: np.ndarray, impairment_var: np.ndarray) -> np.ndarray:
    """:func:`receive` on the received grids ``y``, their LS estimates and impairment powers [B]."""
    return equalize_demap(cfg, interpolate(cfg, h_ls), y, impairment_var)


def equalize_demap(cfg: OfdmConfig, h: np.ndarray, y: np.ndarray, impairment_var: np.ndarray) -> np.ndarray:
    r"""Steps 2-3 with the channel ``h`` [B, n_sym, n_sc]: one reciprocal per RE and one per slot; the unbiased
    estimate :math:`z = \hat x/\mu = \hat H^* Y / |\hat H|^2` and the precision :math:`1/v = |\hat H|^2/\sigma^2`
    need no other division (the same values as the step-by-step form of the module docstring)."""
    g = np.maximum(h.real**2 + h.imag**2, 1e-12)
    r = 1 / g
    z = np.conj(h) * y * r
    precision = g * (1 / impairment_var.astype(np.float64))[:, None, None]
    return maxlog_logits(cfg, z, precision)


def true_channel_receive(cfg: OfdmConfig, slot: OfdmSlot) -> np.ndarray:
    """Bit logits of steps 2-3 with the true channel at every RE in place of the estimate (no estimation error):
    the bound a receiver's channel estimation is measured against."""
    return equalize_demap(cfg, slot.h, slot.y, slot.impairment_var)


class LsLmmseReceiver:
    name = "ls-lmmse"
    task = "ofdm"

    def run(self, cfg: OfdmConfig, slot: OfdmSlot) -> BaselineResult:
        n = slot.y.shape[0]
        return BaselineResult(output=receive(cfg, slot), macs_per_sample=np.full(n, op_count(cfg)),
                              operations=np.tile(self.operations(cfg).as_row(), (n, 1)))

    def op_count(self, cfg: OfdmConfig) -> float:
        """The ``paper`` counting."""
        return op_count(cfg)

    def operations(self, cfg: OfdmConfig) -> OperationCount:
        """The ``implemented`` counting of one slot, LS estimate included, read from the code on a probe slot."""
        return _operations(cfg)


@functools.lru_cache(maxsize=64)
def _operations(cfg: OfdmConfig) -> OperationCount:
    y = np.ones((1, cfg.n_sym, cfg.n_sc), np.complex64)  # the operations depend on the grid, not the values
    return count_call(lambda y, s2: receive_grid(cfg, y, ls_estimate(cfg, y), s2), y, np.ones(1, np.float32))


@hookimpl
def register_baselines(register) -> None:
    register("ls-lmmse", LsLmmseReceiver())
