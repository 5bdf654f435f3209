"""3GPP TDL channels with Jakes Doppler and sparse pilots in the OFDM task (issue 21, item 1)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import j0

from edgejoule.errors import EdgejouleError
from edgejoule.plugins.reception.ofdm_receiver import receive
from edgejoule.tasks.ofdm import OfdmConfig, bit_errors, interpolate, simulate, tdl_channel
from edgejoule.tasks.tdl import TDL_PROFILES, doppler_taps, tdl_profile

SYMBOL_S = (1 + 1 / 14) / 30e3


@pytest.mark.parametrize("name", list(TDL_PROFILES))
def test_tables_are_the_normalized_profiles_of_tr38901(name: str) -> None:
    # TR 38.901 tabulates delays normalized to unit RMS delay spread: a mistyped entry moves it
    delays, power = tdl_profile(name, 300e-9)
    mean = np.sum(power * delays)
    assert np.sqrt(np.sum(power * delays**2) - mean**2) == pytest.approx(300e-9, rel=1e-3)
    assert power.sum() == pytest.approx(1.0) and delays[0] == 0.0


def test_tap_powers_follow_the_profile_over_many_draws() -> None:
    _, power = tdl_profile("tdl-c", 300e-9)
    n = 6000
    taps = doppler_taps(np.broadcast_to(power, (n, len(power))), 14, SYMBOL_S, 500.0, np.random.default_rng(0))
    measured = np.mean(np.abs(taps) ** 2, axis=(0, 2))
    # each tap's mean power within 5 % of the table (6000 draws x 14 symbols, std of the mean ~2 %)
    assert np.allclose(measured / power, 1.0, atol=0.05), measured / power


def test_tap_time_correlation_follows_jakes() -> None:
    doppler = 1000.0
    n = 20000
    taps = doppler_taps(np.ones((n, 1)), 14, SYMBOL_S, doppler, np.random.default_rng(1))[:, 0]
    lags = np.arange(14)
    corr = np.array([np.mean(taps[:, m:] * np.conj(taps[:, : 14 - m])).real for m in lags])
    expected = j0(2 * np.pi * doppler * SYMBOL_S * lags)
    assert expected[-1] < 0.2  # the test spans a real decorrelation, not only the flat top of J0
    assert np.max(np.abs(corr - expected)) < 0.05, np.c_[corr, expected]


def test_tdl_grid_has_the_profiles_frequency_correlation() -> None:
    cfg = OfdmConfig(n_sc=12, channel="tdl-c", delay_spread_ns=300.0, doppler_hz=300.0)
    h = tdl_channel(cfg, 8000, np.random.default_rng(2))
    delays, power = tdl_profile("tdl-c", 300e-9)
    k = np.arange(12)
    expected = np.sum(power[:, None] * np.exp(2j * np.pi * 30e3 * delays[:, None] * k), 0)  # E[H(f+k) H*(f)]^*
    measured = np.mean(np.conj(h[:, :, k]) * h[:, :, :1], axis=(0, 1))
    assert abs(np.mean(np.abs(h) ** 2) - 1.0) < 0.05
    assert np.max(np.abs(measured - expected)) < 0.05, np.c_[measured, expected]


def test_one_pilot_symbol_is_held_over_the_slot() -> None:
    cfg = OfdmConfig(n_sc=12, pilot_symbols=(2,))
    slot = simulate(cfg, 30.0, np.random.default_rng(3), n=2)
    h = interpolate(cfg, slot.h_ls)
    assert cfg.pilot_mask.sum() == 6 and cfg.pilot_mask[2].sum() == 6
    assert np.allclose(h, h[:, 2:3])


def test_sparse_pilots_at_high_doppler_cost_ls_lmmse_its_floor() -> None:
    """The regime of the KD scenario: one pilot symbol at 300 Hz, where holding the estimate fails."""
    ber = {}
    for pilots in ((2, 11), (2,)):
        cfg = OfdmConfig(n_sc=12, channel="tdl-c", delay_spread_ns=300.0, doppler_hz=300.0, pilot_symbols=pilots)
        slot = simulate(cfg, 40.0, np.random.default_rng(4), n=300)
        errors, bits = bit_errors(cfg, receive(cfg, slot), slot.bits)
        ber[pilots] = errors / bits
    # measured 3.6e-4 and 3.9e-2 on 1,500 slots: two orders of magnitude apart
    assert ber[(2,)] > 20 * ber[(2, 11)] and ber[(2,)] > 1e-2, ber


def test_unknown_channel_is_refused() -> None:
    with pytest.raises(EdgejouleError, match="tdl-c"):
        OfdmConfig(channel="tdl-z")
